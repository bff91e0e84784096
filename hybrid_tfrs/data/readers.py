"""Readers for interaction files.

Every reader returns ``list[tuple[str, list[str]]]``: one ``(user_id, item_ids)``
pair per user, ids as the raw strings of the file, items in time order, users
in the order they first appear. Bad input raises :class:`DataError` naming the
file and the line (or row) and field at fault. Text files may be gzip-compressed
and may start with a UTF-8 byte-order mark (as Excel writes them).
"""

import codecs
import contextlib
import csv
import gzip
import json
import os

__all__ = [
    "DataError",
    "DatasetNotFoundError",
    "read_s3rec",
    "read_sasrec",
    "read_movielens_ratings",
    "read_table",
]

_CSV_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET_EXTENSIONS = (".parquet", ".pq")
_JSON_LINES_EXTENSIONS = (".jsonl", ".ndjson", ".json")
TABLE_EXTENSIONS = (*_CSV_SEPARATORS, *_PARQUET_EXTENSIONS, *_JSON_LINES_EXTENSIONS)
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """Input data is missing, malformed or inconsistent."""


class DatasetNotFoundError(DataError):
    """A dataset file could not be found locally nor downloaded."""


def _decoded_lines(path):
    """Yields ``(lineno, line)`` for every line of a UTF-8 text file, gzip-compressed or
    not, a leading byte-order mark dropped; each line keeps its line ending. Decoded line
    by line, so a byte that is not UTF-8 is reported on its own line."""
    try:
        with open(path, "rb") as f:
            compressed = f.read(2) == _GZIP_MAGIC
        with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1:
                    raw = raw.removeprefix(codecs.BOM_UTF8)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path}:{lineno}: not UTF-8 text ({err.reason})") from None
                yield lineno, line
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except (OSError, EOFError) as err:  # no permission, a broken or truncated gzip file
        raise DataError(f"{path}: cannot be read ({err})") from None


def _lines(path):
    """Yields ``(lineno, line)`` for the non-blank lines of a text file (:func:`_decoded_lines`)."""
    return ((lineno, line) for lineno, line in _decoded_lines(path) if line.strip())


def _group(path, rows):
    """Groups ``(user, item)`` rows by user, keeping first-appearance order."""
    users = {}
    for user, item in rows:
        users.setdefault(user, []).append(item)
    if not users:
        raise DataError(f"{path}: no interactions (the file is empty)")
    return list(users.items())


def _parse_time(value, path, where, column):
    """Parses a timestamp as int, else float; ``where`` is e.g. ``"line 3"``."""
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    try:
        time = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}:{where}: {column} {value!r} is not a number") from None
    if time != time:
        raise DataError(f"{path}:{where}: {column} is NaN")
    return time


def _group_by_time(path, rows):
    """Groups ``(user, item, time)`` rows by user, each user stably sorted by time."""
    users = {}
    for user, item, time in rows:
        users.setdefault(user, []).append((time, item))
    if not users:
        raise DataError(f"{path}: no interactions (the file is empty)")
    return [
        (user, [item for _, item in sorted(events, key=lambda event: event[0])])
        for user, events in users.items()
    ]


def read_s3rec(path):
    """Reads the S3-Rec format: ``user item item ...``, one user a line.

    Args:
        path: text file, fields separated by whitespace, items in time order.

    Returns:
        ``[(user, [item, ...]), ...]`` in file order.
    """
    users = {}
    for lineno, line in _lines(path):
        user, *items = line.split()
        if not items:
            raise DataError(f"{path}:{lineno}: user {user!r} has no items")
        if user in users:
            raise DataError(
                f"{path}:{lineno}: user {user!r} already appeared on line {users[user][0]}"
            )
        users[user] = (lineno, items)
    if not users:
        raise DataError(f"{path}: no users (the file is empty)")
    return [(user, items) for user, (_, items) in users.items()]


def read_sasrec(path):
    """Reads the SASRec format: ``user item`` a line, a user's lines in time order.

    A user's lines need not be contiguous; their relative order is kept.

    Returns:
        ``[(user, [item, ...]), ...]``, users in first-appearance order.
    """

    def rows():
        for lineno, line in _lines(path):
            fields = line.split()
            if len(fields) != 2:
                raise DataError(
                    f"{path}:{lineno}: expected 2 fields 'user item', got {len(fields)}"
                )
            yield fields

    return _group(path, rows())


def read_movielens_ratings(path):
    """Reads MovieLens ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``.

    Each user's movies are stably sorted by timestamp: ratings of the same
    second keep their file order.

    Returns:
        ``[(user, [movie, ...]), ...]``, users in first-appearance order.
    """

    def rows():
        for lineno, line in _lines(path):
            fields = line.strip().split("::")
            if len(fields) != 4:
                raise DataError(
                    f"{path}:{lineno}: expected 4 fields "
                    f"'UserID::MovieID::Rating::Timestamp', got {len(fields)}"
                )
            user, movie, _, timestamp = fields
            try:
                time = int(timestamp)
            except ValueError:
                raise DataError(
                    f"{path}:{lineno}: Timestamp {timestamp!r} is not an integer"
                ) from None
            yield user, movie, time

    return _group_by_time(path, rows())


def read_table(path, user_col, item_col, time_col=None, sep=None):
    """Reads a CSV / TSV (with a header row), Parquet or JSON-lines table of interactions.

    Args:
        path: ``.csv`` / ``.tsv`` / ``.tab`` / ``.parquet`` / ``.pq`` /
            ``.jsonl`` / ``.ndjson`` / ``.json`` (one JSON object a line) file;
            any other extension is read as delimited text when ``sep`` is given.
        user_col, item_col: names of the user and item columns.
        time_col: optional numeric column; each user's items are stably sorted
            by it (equal times keep file order). Without it, file order is the
            time order.
        sep: field separator of a text table; overrides the extension.

    Returns:
        ``[(user, [item, ...]), ...]``, users in first-appearance order.
    """
    path = os.fspath(path)
    ext = table_extension(path)
    columns = [user_col, item_col] + ([time_col] if time_col is not None else [])
    if sep is None and ext in _PARQUET_EXTENSIONS:
        rows = _parquet_rows(path, columns)
    elif sep is None and ext in _JSON_LINES_EXTENSIONS:
        rows = _json_lines_rows(path, columns)
    elif sep is not None or ext in _CSV_SEPARATORS:
        rows = _csv_rows(path, columns, sep or _CSV_SEPARATORS[ext])
    else:
        raise DataError(
            f"{path}: unknown table extension {ext!r}; use .csv, .tsv, .parquet, .jsonl "
            "(text ones may end in .gz) or give the field delimiter (--delimiter)"
        )
    if time_col is None:
        return _group(path, ((user, item) for _, user, item in rows))
    timed = (
        (user, item, _parse_time(time, path, where, time_col)) for where, user, item, time in rows
    )
    return _group_by_time(path, timed)


def check_columns(path, header, columns):
    """DataError naming the first of ``columns`` missing from a table's ``header``, the
    columns it has and the flag most likely at fault (the same for --data_file and
    hybrid-tfrs-preprocess)."""
    for column in columns:
        if column not in header:
            one_field = len(header) == 1 and any(sep in header[0] for sep in ",;\t|")
            hint = (
                "one column: is the field delimiter right? --delimiter"
                if one_field
                else "--user_column, --item_column and --time_column name them; "
                "--time_column= keeps file order"
            )
            raise DataError(
                f"{path}: no column {column!r}; available columns: "
                + ", ".join(repr(name) for name in header)
                + f" ({hint})"
            )


def table_extension(path):
    """A table's extension, lower case, after any ``.gz`` (a text table may be gzipped)."""
    return os.path.splitext(path.removesuffix(".gz"))[1].lower()


def _check_id(value, path, where, column):
    """The id as a stripped string; DataError if it is empty or holds a line break (the
    vocabulary file keeps one id a line)."""
    text = "" if value is None else str(value).strip()
    if not text:
        raise DataError(f"{path}:{where}: empty {column}")
    if "\n" in text or "\r" in text:
        raise DataError(f"{path}:{where}: {column} {text[:50]!r} holds a line break")
    return text


def _csv_rows(path, columns, sep):
    """Yields ``(where, user, item[, time])`` from a delimited text file with a header; a
    row whose quoted field holds line breaks is named by its first line."""
    lines = _decoded_lines(path)
    with contextlib.closing(lines):
        reader = csv.reader((line for _, line in lines), delimiter=sep)
        first = 1  # the first line of the row being read
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file, expected a header row")
            header = [name.strip() for name in header]
            check_columns(path, header, columns)
            positions = [header.index(column) for column in columns]
            first = reader.line_num + 1
            for fields in reader:
                where, first = first, reader.line_num + 1
                if not any(field.strip() for field in fields):
                    continue
                if len(fields) != len(header):
                    raise DataError(
                        f"{path}:{where}: expected {len(header)} fields, got {len(fields)}"
                        + _stray_quote_hint(where, reader.line_num)
                    )
                user, item, *time = (fields[i] for i in positions)
                yield (
                    where,
                    _check_id(user, path, where, columns[0]),
                    _check_id(item, path, where, columns[1]),
                    *time,
                )
        except csv.Error as err:  # e.g. a quoted field longer than csv's field size limit
            hint = _stray_quote_hint(first, reader.line_num)
            raise DataError(f"{path}:{first}: {err}{hint}") from None


def _stray_quote_hint(first, last):
    """The end of an error about a row read from line ``first`` to ``last``."""
    if last == first:
        return ""
    return f" (a quoted field opened on line {first} runs to line {last}: a stray quote?)"


def _json_lines_rows(path, columns):
    """Yields ``(where, user, item[, time])`` from a file of JSON objects, one a line."""
    for lineno, line in _lines(path):
        where = f"{lineno}"
        try:
            record = json.loads(line)
        except ValueError as err:
            raise DataError(f"{path}:{where}: not a JSON object ({err})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{where}: not a JSON object, got {type(record).__name__}")
        missing = [column for column in columns if column not in record]
        if missing:
            raise DataError(
                f"{path}:{where}: no field {missing[0]!r}; the line has "
                + ", ".join(repr(name) for name in record)
            )
        user, item, *time = (record[column] for column in columns)
        yield (
            where,
            _check_id(user, path, where, columns[0]),
            _check_id(item, path, where, columns[1]),
            *time,
        )


def _parquet_rows(path, columns):
    """Yields ``(where, user, item[, time])`` from a Parquet file; ``where`` is ``row N``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    check_columns(path, schema.names, columns)
    table = pq.read_table(path, columns=columns)
    if len(columns) == 3:
        time = table.column(columns[2])
        if pa.types.is_date(time.type):
            time = time.cast(pa.timestamp("s"))
        if pa.types.is_timestamp(time.type):
            table = table.set_column(2, columns[2], time.cast(pa.int64()))
    values = [table.column(column).to_pylist() for column in columns]
    for row, fields in enumerate(zip(*values), start=1):
        where = f"row {row}"
        user, item, *time = fields
        yield (
            where,
            _check_id(user, path, where, columns[0]),
            _check_id(item, path, where, columns[1]),
            *time,
        )
