"""Readers on small fixtures, malformed ones included."""

import datetime
import gzip
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybrid_tfrs.data.readers import (
    DataError,
    read_movielens_ratings,
    read_s3rec,
    read_sasrec,
    read_table,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _error(reader, fname, *args):
    """The message of the DataError that ``reader`` raises on fixture ``fname``."""
    with pytest.raises(DataError) as info:
        reader(FIXTURES / fname, *args)
    return str(info.value)


def test_s3rec_reads_users_in_file_order_and_skips_blank_lines():
    assert read_s3rec(FIXTURES / "s3rec.txt") == [
        ("1", ["1", "2", "3", "4", "5"]),
        ("2", ["6", "7", "8", "9", "10", "4", "11"]),
        ("3", ["4", "12", "13"]),
    ]


@pytest.mark.parametrize(
    "fname, location, words",
    [
        ("s3rec_no_items.txt", ":2:", "no items"),
        ("s3rec_duplicate_user.txt", ":3:", "already appeared on line 1"),
        ("empty.txt", "", "empty"),
    ],
)
def test_s3rec_errors_name_file_and_line(fname, location, words):
    message = _error(read_s3rec, fname)
    assert f"{fname}{location}" in message
    assert words in message


def test_missing_file_is_a_data_error():
    assert "no such file" in _error(read_s3rec, "absent.txt")


def test_non_utf8_is_a_data_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"1 1 2\n2 caf\xe9 3\n")
    with pytest.raises(DataError, match=r"latin1.txt:2: not UTF-8"):
        read_s3rec(path)


def test_sasrec_groups_users_keeping_order_within_user():
    assert read_sasrec(FIXTURES / "sasrec.txt") == [
        ("1", ["1", "2", "4"]),
        ("2", ["3", "1"]),
        ("3", ["5"]),
    ]


def test_sasrec_wrong_field_count():
    message = _error(read_sasrec, "sasrec_bad_fields.txt")
    assert "sasrec_bad_fields.txt:3:" in message and "got 3" in message


def test_sasrec_empty_file():
    assert "empty" in _error(read_sasrec, "empty.txt")


def test_movielens_sorts_by_timestamp_stably():
    assert read_movielens_ratings(FIXTURES / "ratings.dat") == [
        ("1", ["3408", "1193", "914", "661"]),
        # 1357 and 2194 share a second, as do 3068, 1537, 647: file order kept.
        ("2", ["1357", "2194", "3068", "1537", "647"]),
    ]


@pytest.mark.parametrize(
    "fname, words",
    [("ratings_bad_timestamp.dat", "Timestamp '97830x109'"), ("ratings_bad_fields.dat", "got 3")],
)
def test_movielens_errors_name_file_and_line(fname, words):
    message = _error(read_movielens_ratings, fname)
    assert f"{fname}:2:" in message and words in message


def test_csv_sorted_stably_by_time_column():
    assert read_table(FIXTURES / "table.csv", "user_id", "item_id", "ts") == [
        ("alice", ["fig", "lime", "apple", "kiwi"]),
        ("bob", ["plum", "pear"]),
    ]


def test_csv_without_time_column_keeps_file_order():
    assert read_table(FIXTURES / "table.csv", "user_id", "item_id") == [
        ("alice", ["apple", "fig", "kiwi", "lime"]),
        ("bob", ["pear", "plum"]),
    ]


def test_tsv_by_extension_and_explicit_sep(tmp_path):
    expected = [("alice", ["fig", "apple"]), ("bob", ["pear"])]
    assert read_table(FIXTURES / "table.tsv", "user_id", "item_id", "ts") == expected
    other = tmp_path / "table.data"
    other.write_text((FIXTURES / "table.tsv").read_text())
    assert read_table(other, "user_id", "item_id", "ts", sep="\t") == expected


def test_table_missing_column_lists_available_ones():
    message = _error(read_table, "table.csv", "user", "item_id")
    assert "'user'" in message
    assert "'user_id', 'item_id', 'rating', 'ts'" in message


def test_table_non_numeric_time_names_column_and_line():
    message = _error(read_table, "table_bad_time.csv", "user_id", "item_id", "ts")
    assert "table_bad_time.csv:3:" in message and "ts 'soon'" in message


def test_table_wrong_field_count():
    message = _error(read_table, "table_bad_fields.csv", "user_id", "item_id")
    assert "table_bad_fields.csv:3:" in message


def test_table_unknown_extension(tmp_path):
    path = tmp_path / "table.data"
    path.write_text("u,i\n1,2\n")
    with pytest.raises(DataError, match="unknown table extension"):
        read_table(path, "u", "i")


def test_parquet_with_int_ids_and_time(tmp_path):
    path = tmp_path / "events.parquet"
    table = pa.table({"u": [7, 8, 7, 7], "i": [1, 2, 3, 4], "t": [5.0, 1.0, 2.0, 5.0]})
    pq.write_table(table, path)
    assert read_table(path, "u", "i", "t") == [("7", ["3", "1", "4"]), ("8", ["2"])]
    with pytest.raises(DataError) as info:
        read_table(path, "u", "i", "time")
    assert "events.parquet: no column 'time'; available columns: 'u', 'i', 't'" in str(info.value)


def test_parquet_timestamp_and_date_columns_and_null_id(tmp_path):
    path = tmp_path / "events.parquet"
    times = pa.array([3_000, 1_000, 2_000], type=pa.timestamp("s"))
    pq.write_table(pa.table({"u": ["a", "a", "a"], "i": ["x", "y", "z"], "t": times}), path)
    assert read_table(path, "u", "i", "t") == [("a", ["y", "z", "x"])]
    days = pa.array([datetime.date(2020, 1, day) for day in (3, 1, 2)])
    pq.write_table(pa.table({"u": ["a", "a", "a"], "i": ["x", "y", "z"], "t": days}), path)
    assert read_table(path, "u", "i", "t") == [("a", ["y", "z", "x"])]
    pq.write_table(pa.table({"u": ["a", None], "i": ["x", "y"]}), path)
    with pytest.raises(DataError, match=r"events.parquet:row 2: empty u"):
        read_table(path, "u", "i")


def test_a_table_with_excels_byte_order_mark_and_crlf_reads_like_plain_utf8(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfuser_id,item_id,ts\r\nalice,caf\xc3\xa9,2\r\nalice,tea,1\r\n")
    assert read_table(path, "user_id", "item_id", "ts") == [("alice", ["tea", "café"])]


def test_gzip_tables_and_lines_are_read_as_their_inner_format(tmp_path):
    plain = (FIXTURES / "table.tsv").read_bytes()
    path = tmp_path / "table.tsv.gz"
    path.write_bytes(gzip.compress(plain))
    assert read_table(path, "user_id", "item_id", "ts") == read_table(
        FIXTURES / "table.tsv", "user_id", "item_id", "ts"
    )
    s3rec = tmp_path / "s3rec.txt"
    s3rec.write_bytes(gzip.compress(b"1 1 2\n2 3 4\n"))
    assert read_s3rec(s3rec) == [("1", ["1", "2"]), ("2", ["3", "4"])]
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress(plain)[:20])
    with pytest.raises(DataError, match=r"cut.csv.gz: cannot be read"):
        read_table(truncated, "user_id", "item_id")


def test_a_byte_that_is_not_utf8_is_named_on_its_own_line_far_into_a_table(tmp_path):
    path = tmp_path / "latin1.csv"
    rows = [b"u,i"] + [b"%d,item%d" % (n, n) for n in range(2, 1000)] + [b"1000,caf\xe9"]
    path.write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(DataError, match=r"latin1.csv:1000: not UTF-8"):
        read_table(path, "u", "i")


def test_a_folder_or_unreadable_table_is_a_data_error(tmp_path):
    folder = tmp_path / "events.csv"
    folder.mkdir()
    with pytest.raises(DataError, match=r"events.csv: is a directory"):
        read_table(folder, "u", "i")


def test_a_header_read_as_one_field_points_at_the_delimiter(tmp_path):
    path = tmp_path / "semicolons.csv"
    path.write_text("u;i\n1;2\n")
    with pytest.raises(DataError, match=r"no column 'u'.*one column: .*--delimiter"):
        read_table(path, "u", "i")


def test_an_id_with_a_line_break_is_named_with_its_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"u": "a", "i": "x"}\n{"u": "a", "i": "y\\nz"}\n')
    with pytest.raises(DataError, match=r"events.jsonl:2: i 'y\\nz' holds a line break"):
        read_table(path, "u", "i")


def test_a_quoted_field_may_hold_line_breaks_and_a_stray_quote_names_its_line(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text('u,i,comment\na,x,"two\nlines"\na,y,plain\n')
    assert read_table(path, "u", "i") == [("a", ["x", "y"])]
    path.write_text('u,i,comment\na,x,ok\na,"y,stray\n' + "b,z,ok\n" * 30)
    with pytest.raises(DataError, match=r"events.csv:3: .*quoted field opened on line 3"):
        read_table(path, "u", "i")
