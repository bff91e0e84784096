"""Encoded sequences and the leave-one-out split."""

import dataclasses

import numpy as np

from hybrid_tfrs.data.readers import DataError
from hybrid_tfrs.data.vocabulary import Vocabulary

__all__ = ["SequenceData", "Split", "encode_dataset", "leave_one_out", "sequence_stats"]


@dataclasses.dataclass
class SequenceData:
    """A dataset with items encoded as indices.

    Attributes:
        user_ids: raw user ids, [U].
        sequences: per user an np.int32 array of item indices (1..N) in time order.
        vocabulary: the item vocabulary (N items).
        name: dataset name, for reports.
    """

    user_ids: list
    sequences: list
    vocabulary: Vocabulary
    name: str

    @property
    def num_items(self):
        return len(self.vocabulary)

    @property
    def num_interactions(self):
        return int(sum(len(sequence) for sequence in self.sequences))


def encode_dataset(raw, name, vocabulary=None):
    """Encodes reader output ``[(user, [item, ...]), ...]`` into :class:`SequenceData`.

    ``vocabulary``: the item numbering; None numbers items in first-appearance order.
    """
    if not raw:
        raise DataError(f"dataset {name!r}: no users")
    seen = set()
    for user, items in raw:
        if user in seen:
            raise DataError(f"dataset {name!r}: user {user!r} appears twice")
        if len(items) == 0:
            raise DataError(f"dataset {name!r}: user {user!r} has no items")
        seen.add(user)
    if vocabulary is None:
        vocabulary = Vocabulary.from_sequences(items for _, items in raw)
    sequences = [vocabulary.encode(items) for _, items in raw]
    return SequenceData([user for user, _ in raw], sequences, vocabulary, name)


@dataclasses.dataclass
class Split:
    """Leave-one-out split: last item = test, second last = validation, rest = train.

    All per-user lists are aligned with ``user_ids`` (the kept users, U of them).

    Attributes:
        user_ids: raw ids of the kept users, [U].
        train: training sequences ``seq[:-2]``, int32 arrays.
        valid_histories: validation histories ``seq[:-2]`` (the train arrays).
        valid_targets: int32 [U], ``seq[-2]``.
        test_histories: test histories ``seq[:-1]``.
        test_targets: int32 [U], ``seq[-1]``.
        user_items: sorted unique item indices of each user's whole sequence,
            targets included (items to exclude when sampling negatives).
        item_popularity: int64 [N + 1], item counts in the train part; index 0 is 0.
        num_items: N.
        skipped_users: users dropped for being shorter than ``min_length``.
        name: dataset name.
    """

    user_ids: list
    train: list
    valid_histories: list
    valid_targets: np.ndarray
    test_histories: list
    test_targets: np.ndarray
    user_items: list
    item_popularity: np.ndarray
    num_items: int
    skipped_users: int
    name: str

    @property
    def most_user_items(self):
        """The largest number of distinct items of one user (its targets included)."""
        return max(len(items) for items in self.user_items)

    def stats(self):
        """Summary of the kept users' full sequences, JSON-ready."""
        lengths = np.array([len(history) + 1 for history in self.test_histories])
        return sequence_stats(self.name, lengths, self.num_items, self.skipped_users)


def sequence_stats(name, lengths, num_items, skipped_users):
    """The stats of a split whose users' whole sequences have ``lengths`` (int [U])."""
    return {
        "dataset": name,
        "users": len(lengths),
        "items": num_items,
        "interactions": int(lengths.sum()),
        "min_length": int(lengths.min()),
        "mean_length": float(lengths.mean()),
        "max_length": int(lengths.max()),
        "skipped_users": skipped_users,
    }


def leave_one_out(data, min_length=3):
    """Splits each user's sequence by time: ``seq[:-2]`` train, ``seq[-2]`` valid, ``seq[-1]`` test.

    Args:
        data: :class:`SequenceData`.
        min_length: users with fewer items are skipped (and counted); at least 3.

    Returns:
        :class:`Split`.
    """
    if min_length < 3:
        raise ValueError(f"min_length must be at least 3 (train, valid, test), got {min_length}")
    kept = [i for i, sequence in enumerate(data.sequences) if len(sequence) >= min_length]
    if not kept:
        raise DataError(
            f"dataset {data.name!r}: no user has at least {min_length} items "
            f"({len(data.sequences)} users, all skipped)"
        )
    sequences = [data.sequences[i] for i in kept]
    train = [sequence[:-2] for sequence in sequences]
    popularity = np.bincount(np.concatenate(train), minlength=data.num_items + 1)
    return Split(
        user_ids=[data.user_ids[i] for i in kept],
        train=train,
        valid_histories=train,
        valid_targets=np.array([sequence[-2] for sequence in sequences], dtype=np.int32),
        test_histories=[sequence[:-1] for sequence in sequences],
        test_targets=np.array([sequence[-1] for sequence in sequences], dtype=np.int32),
        user_items=[np.unique(sequence) for sequence in sequences],
        item_popularity=popularity.astype(np.int64),
        num_items=data.num_items,
        skipped_users=len(data.sequences) - len(kept),
        name=data.name,
    )
