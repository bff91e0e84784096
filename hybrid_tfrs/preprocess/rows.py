"""Rows of one interaction file -> events, or dead letters for the malformed ones (no Beam).

The formats and column rules are those of hybrid_tfrs.data.readers.read_table,
but a malformed row does not stop the job: it becomes a dead letter
``{"file", "line", "reason", "detail", "text"}`` and is counted by ``reason``.
"""

import codecs
import collections
import csv
import io
import json
import math

from hybrid_tfrs.data.readers import (
    _CSV_SEPARATORS,
    _JSON_LINES_EXTENSIONS,
    _PARQUET_EXTENSIONS,
    check_columns,
    table_extension,
)

__all__ = ["Columns", "file_format", "header_columns", "parse_rows", "read_header"]

# A quoted field may hold line breaks (a free-text column). A row still open this many
# lines on has a stray quote: its first line becomes a dead letter and the lines after
# it are read again as rows, so one stray quote costs one row, not the rest of the file.
MAX_RECORD_LINES = 100

# Why a row is a dead letter (stats.json counts them under these names).
REASONS = (
    "not_utf8",
    "field_count",
    "empty_user",
    "empty_item",
    "line_break",  # an id holding one: vocabulary.txt keeps one id a line
    "unclosed_quote",  # a stray quote: the field it opens is still open 100 lines on
    "bad_time",
    "not_json",
)


class Columns:
    """Column names of user, item and (optional, None = file order) time."""

    def __init__(self, user, item, time=None):
        self.user, self.item, self.time = user, item, time or None

    @property
    def names(self):
        return [self.user, self.item] + ([self.time] if self.time else [])


def file_format(path, sep=None):
    """``("text", sep)``, ``("jsonl", None)`` or ``("parquet", None)``; ValueError otherwise.
    A text file may be gzip-compressed (``.gz`` after its own extension)."""
    ext = table_extension(path)
    if sep:
        return "text", sep
    if ext in _CSV_SEPARATORS:
        return "text", _CSV_SEPARATORS[ext]
    if ext in _JSON_LINES_EXTENSIONS:
        return "jsonl", None
    if ext in _PARQUET_EXTENSIONS:
        return "parquet", None
    raise ValueError(
        f"{path}: unknown table extension {ext!r}; use .csv, .tsv, .parquet, .jsonl "
        "(text ones may end in .gz) or --delimiter"
    )


def header_columns(header, sep):
    """The column names of a text file's header row (str)."""
    return [name.strip() for name in next(csv.reader([header], delimiter=sep))]


def read_header(path, f, sep):
    """The column names of a delimited text file's first row (which a quoted name may
    spread over several lines), from ``f`` opened in binary mode; ValueError naming
    the file when it is empty or its header is not a row."""
    for line, text in _rows_of_text(path, f, sep):
        if isinstance(text, dict):
            raise ValueError(f"{path}: cannot read its header (line {line}: {text['detail']})")
        return header_columns(text, sep)
    raise ValueError(f"{path}: empty file, expected a header row")


def quote_open(text, sep, quote='"'):
    """Whether delimited text ends inside a quoted field, by the csv module's rules: a
    quote opens a field only at the field's start, and a doubled quote inside is one."""
    if quote not in text:  # most rows: no scan in Python
        return False
    inside = closed_just_now = False
    at_field_start = True
    for char in text:
        if inside:
            if char == quote:
                inside, closed_just_now = False, True
            continue
        if char == quote and (at_field_start or closed_just_now):
            inside = True  # opens the field, or is the second quote of a doubled one
        closed_just_now = False
        at_field_start = char == sep
    return inside


def _dead(path, where, reason, detail, text=""):
    return {"file": path, "line": where, "reason": reason, "detail": detail, "text": text}


def _time(value):
    """A numeric time, or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else value
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    try:
        time = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(time) else time


def _event(path, where, user, item, time, columns, text):
    """``("event", (user, item, time, where))`` or ``("dead", dead letter)`` of one row."""
    user = "" if user is None else str(user).strip()
    item = "" if item is None else str(item).strip()
    if not user:
        return "dead", _dead(path, where, "empty_user", f"empty {columns.user}", text)
    if not item:
        return "dead", _dead(path, where, "empty_item", f"empty {columns.item}", text)
    for column, value in ((columns.user, user), (columns.item, item)):
        if "\n" in value or "\r" in value:
            return "dead", _dead(path, where, "line_break", f"{column} holds a line break", text)
    if columns.time:
        parsed = _time(time)
        if parsed is None:
            detail = f"{columns.time} {time!r} is not a number"
            return "dead", _dead(path, where, "bad_time", detail, text)
        time = parsed
    return "event", (user, item, time, where)


def parse_rows(path, f, columns, sep=None):
    """Yields ``("event", (user, item, time, line))`` or ``("dead", letter)`` for each row.

    Args:
        path: the file's name, for dead letters and its format.
        f: the file opened in binary mode.
        columns: :class:`Columns`.
        sep: field separator of a text file; None: by the extension.

    ``line`` is the 1-based line (text, JSON lines) or row (Parquet); with the
    file it orders events of equal time. A missing column raises ValueError.
    """
    kind, sep = file_format(path, sep)
    if kind == "parquet":
        yield from _parquet_rows(path, f, columns)
        return
    names = None
    for line, text in _rows_of_text(path, f, sep if kind == "text" else None):
        if isinstance(text, dict):  # a dead letter
            yield "dead", text
            continue
        if kind == "text":
            if names is None:
                names = header_columns(text, sep)
                positions = _positions(path, names, columns)
                continue
            fields = next(csv.reader([text], delimiter=sep))
            if len(fields) != len(names):
                detail = f"expected {len(names)} fields, got {len(fields)}"
                yield "dead", _dead(path, line, "field_count", detail, text)
                continue
            values = [fields[i] for i in positions]
        else:
            try:
                record = json.loads(text)
            except ValueError as err:
                yield "dead", _dead(path, line, "not_json", str(err), text)
                continue
            if not isinstance(record, dict):
                yield "dead", _dead(path, line, "not_json", "not a JSON object", text)
                continue
            values = [record.get(name) for name in columns.names]
        user, item, time = values if columns.time else (*values, None)
        yield _event(path, line, user, item, time, columns, text)


def _rows_of_text(path, f, sep):
    """Yields ``(first line, text)`` for each non-blank row of a text file, or ``(line,
    dead letter)`` for a line that is not UTF-8 or a stray quote's row.

    With ``sep`` (a delimited file), a row whose quoted field holds line breaks is
    joined across its lines (see :data:`MAX_RECORD_LINES`)."""
    lines = _decoded_lines(path, f)
    read_again = collections.deque()  # (line, text) read past a stray quote

    def next_line():
        return read_again.popleft() if read_again else next(lines, None)

    while (first := next_line()) is not None:
        line, text = first
        if isinstance(text, dict):
            yield first
            continue
        if not text.strip():  # a blank line between rows
            continue
        row = [first]
        while sep and quote_open("\n".join(part for _, part in row), sep):
            following = next_line() if len(row) < MAX_RECORD_LINES else None
            if following is None:  # still open 100 lines on, or at the end: a stray quote
                detail = f"the quoted field opened here is still open on line {row[-1][0]}"
                yield line, _dead(path, line, "unclosed_quote", detail, text)
                read_again.extendleft(reversed(row[1:]))
                break
            if isinstance(following[1], dict):
                yield following
            else:
                row.append(following)
        else:
            yield line, "\n".join(part for _, part in row)


def _decoded_lines(path, f):
    """Yields ``(line, text)`` for each line of a binary file, a byte-order mark and the
    line ending dropped, or ``(line, dead letter)`` for a line that is not UTF-8."""
    for line, raw in enumerate(iter(f.readline, b""), start=1):  # Beam's gzip file has no __iter__
        if line == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield line, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            yield line, _dead(path, line, "not_utf8", err.reason, repr(raw))


def _positions(path, names, columns):
    check_columns(path, names, columns.names)  # DataError, a ValueError
    return [names.index(name) for name in columns.names]


def _parquet_rows(path, f, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(io.BytesIO(f.read()) if not f.seekable() else f)
    _positions(path, parquet.schema_arrow.names, columns)
    row = 0
    for batch in parquet.iter_batches(columns=columns.names):
        arrays = [batch.column(name) for name in columns.names]
        if columns.time:
            time = arrays[2]
            if pa.types.is_date(time.type):
                time = time.cast(pa.timestamp("s"))
            if pa.types.is_timestamp(time.type):
                time = time.cast(pa.int64())
            arrays[2] = time
        values = [array.to_pylist() for array in arrays]
        if not columns.time:
            values.append([None] * len(batch))
        for user, item, time in zip(*values):
            row += 1
            yield _event(path, row, user, item, time, columns, "")
