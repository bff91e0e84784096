"""Raw item id <-> integer index mapping."""

import collections

import numpy as np

from hybrid_tfrs.data.readers import DataError

__all__ = ["Vocabulary", "PADDING_INDEX"]

PADDING_INDEX = 0


class Vocabulary:
    """Maps raw string item ids to indices ``1..N``.

    The named datasets number items in first-appearance order
    (:meth:`from_sequences`); own data (``--data_file``, ``--prepared_dir``) by
    frequency (:meth:`by_frequency`), which a distributed pipeline can compute.

    Index 0 is padding and never an item. The saved form is a UTF-8 text file
    with one raw id a line, line ``i`` holding the id of index ``i``; it is also
    the vocabulary asset of the exported model.
    """

    def __init__(self, raw_ids):
        """Builds from the raw ids of indices ``1..N``, in order; they must be unique."""
        self._ids = tuple(raw_ids)
        self._index = {}
        for position, raw in enumerate(self._ids, start=1):
            _check_id(raw, f"id number {position}")
            if raw in self._index:
                raise DataError(f"duplicate id {raw!r} at index {position}")
            self._index[raw] = position

    @classmethod
    def from_sequences(cls, raw_sequences):
        """Builds from item-id sequences (``[[item, ...], ...]``), first appearance first."""
        index = {}
        for sequence in raw_sequences:
            for raw in sequence:
                if not isinstance(raw, str) or raw not in index:
                    _check_id(raw, "item id")
                    index[raw] = None
        return cls(index)

    @classmethod
    def by_frequency(cls, raw_sequences):
        """Builds from item-id sequences, the most frequent item first, ties by raw id."""
        counts = collections.Counter()
        for sequence in raw_sequences:
            counts.update(sequence)
        for raw in counts:
            _check_id(raw, "item id")
        return cls(sorted(counts, key=lambda raw: (-counts[raw], raw)))

    @property
    def ids(self):
        """The raw ids of indices ``1..N``, as a tuple."""
        return self._ids

    def __len__(self):
        """N, the number of items (padding not counted)."""
        return len(self._ids)

    def __contains__(self, raw):
        return raw in self._index

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self._ids == other._ids

    def __repr__(self):
        return f"Vocabulary({len(self)} items)"

    def index(self, raw):
        """The index (1..N) of a raw id; KeyError if unknown."""
        try:
            return self._index[raw]
        except KeyError:
            raise KeyError(f"unknown item id {raw!r}") from None

    def raw(self, index):
        """The raw id of an index in 1..N; IndexError otherwise (0 is padding)."""
        index = int(index)
        if not 1 <= index <= len(self._ids):
            raise IndexError(f"item index {index} outside 1..{len(self._ids)}")
        return self._ids[index - 1]

    def encode(self, raw_ids):
        """Raw ids -> np.int32 array of indices, same shape [n]; KeyError on an unknown id."""
        return np.fromiter((self.index(raw) for raw in raw_ids), dtype=np.int32)

    def decode(self, indices):
        """Indices (1..N) -> list of raw ids."""
        return [self.raw(index) for index in np.asarray(indices).reshape(-1)]

    def save(self, path):
        """Writes the ids one a line (line i = index i), UTF-8."""
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(raw + "\n" for raw in self._ids)

    @classmethod
    def load(cls, path):
        """Reads a file written by :meth:`save`; DataError on an empty or duplicate id."""
        try:
            with open(path, encoding="utf-8", newline="") as f:
                text = f.read()
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 text ({err.reason})") from None
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        seen = {}
        for lineno, line in enumerate(lines, start=1):
            raw = line[:-1] if line.endswith("\r") else line
            if not raw.strip():
                raise DataError(f"{path}:{lineno}: empty item id")
            if raw in seen:
                raise DataError(
                    f"{path}:{lineno}: duplicate item id {raw!r} (first on line {seen[raw]})"
                )
            seen[raw] = lineno
        if not seen:
            raise DataError(f"{path}: empty vocabulary file")
        return cls(seen)


def _check_id(raw, what):
    """A raw id must be a non-blank str without line breaks (the saved form is a line per id)."""
    if not isinstance(raw, str):
        raise DataError(
            f"{what} must be a str, got {type(raw).__name__} {raw!r} "
            "(Vocabulary.from_sequences takes lists of item ids)"
        )
    if not raw.strip() or "\n" in raw or "\r" in raw:
        raise DataError(f"{what} {raw!r} is empty or contains a line break")
