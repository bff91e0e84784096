"""hybrid-tfrs-preprocess (issue 14 item 2): the Beam pipeline on small generated logs.

Malformed rows go to the dead-letter files and stats.json; the vocabulary
(by frequency), popularity counts and leave-one-out split equal those that
``--data_file`` computes in memory from the same events. Needs the beam extra.
"""

import codecs
import gzip
import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

beam = pytest.importorskip("apache_beam")

from hybrid_tfrs.data.event_log import generate_events, write_csv  # noqa: E402
from hybrid_tfrs.data.own import load_table_split  # noqa: E402
from hybrid_tfrs.data.prepared import load_prepared  # noqa: E402
from hybrid_tfrs.preprocess.pipeline import build_pipeline  # noqa: E402
from hybrid_tfrs.preprocess.rows import MAX_RECORD_LINES, Columns, parse_rows  # noqa: E402

COLUMNS = Columns("user_id", "item_id", "timestamp")
# Malformed rows appended to the first file: (text, reason).
MALFORMED = [
    ("u1,,5", "empty_item"),
    (",i1,5", "empty_user"),
    ("u1,i1", "field_count"),
    ("u1,i1,soon", "bad_time"),
]


@pytest.fixture(scope="module")
def events():
    """160 users, 40 items, 1500 events with tied times."""
    return generate_events(160, 40, 1500, seed=7)


def _preprocess(repo_root, *args):
    return subprocess.run(
        [sys.executable, str(repo_root / "trainers" / "preprocess.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )


def _run_pipeline(files, output_dir, **kwargs):
    with beam.Pipeline() as pipeline:
        build_pipeline(pipeline, [str(f) for f in files], COLUMNS, str(output_dir), **kwargs)
    return load_prepared(output_dir)


def _read_users(prepared):
    """{user: (train, valid, test)} as raw item ids, read from the shards with TensorFlow."""
    from hybrid_tfrs.data.prepared_pipeline import read_split

    split = read_split(prepared)
    decode = prepared.vocabulary.decode
    return {
        user: (decode(train), decode([valid]), decode([test]))
        for user, train, valid, test in zip(
            split.user_ids, split.train, split.valid_targets, split.test_targets
        )
    }


def _in_memory_users(data, split):
    decode = data.vocabulary.decode
    return {
        user: (decode(train), decode([valid]), decode([test]))
        for user, train, valid, test in zip(
            split.user_ids, split.train, split.valid_targets, split.test_targets
        )
    }


def test_preprocess_dead_letters_stats_and_the_in_memory_split(repo_root, tmp_path, events):
    users, items, times = events
    half = len(users) // 2
    logs = tmp_path / "logs"
    logs.mkdir()
    write_csv(logs / "part-0.csv", users[:half], items[:half], times[:half])
    write_csv(logs / "part-1.csv", users[half:], items[half:], times[half:])
    with open(logs / "part-0.csv", "a") as f:
        f.writelines(text + "\n" for text, _ in MALFORMED)
    out = tmp_path / "prepared"

    result = _preprocess(repo_root, f"--input={logs}/*.csv", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 malformed" in result.stdout

    letters = [
        json.loads(line)
        for name in sorted(os.listdir(out))
        if name.startswith("dead_letter-")
        for line in (out / name).read_text().splitlines()
    ]
    first_malformed_line = half + 2  # after the header and the file's events
    assert sorted((d["line"], d["reason"], d["text"]) for d in letters) == [
        (first_malformed_line + k, reason, text) for k, (text, reason) in enumerate(MALFORMED)
    ]
    assert all(d["file"].endswith("part-0.csv") for d in letters)

    # In memory: the same well-formed events, in file order, as one CSV.
    write_csv(tmp_path / "all.csv", users, items, times)
    data, split = load_table_split(tmp_path / "all.csv", "user_id", "item_id", "timestamp")
    prepared = load_prepared(out)
    stats = prepared.stats
    assert stats["rows_read"] == len(users) + len(MALFORMED)
    assert stats["dropped"]["malformed_rows"] == {
        "not_utf8": 0,
        "field_count": 1,
        "empty_user": 1,
        "empty_item": 1,
        "line_break": 0,
        "unclosed_quote": 0,
        "bad_time": 1,
        "not_json": 0,
    }
    assert stats["users"] == len(split.user_ids)
    assert stats["dropped"]["users_below_min_length"] == split.skipped_users > 0
    assert stats["items"] == data.num_items
    assert stats["interactions"] == split.stats()["interactions"]
    assert prepared.vocabulary == data.vocabulary  # by frequency, ties by id
    counts = np.bincount(data.vocabulary.encode(items), minlength=data.num_items + 1)
    assert np.all(np.diff(counts[1:]) <= 0)  # most frequent first
    np.testing.assert_array_equal(prepared.item_popularity, split.item_popularity)
    assert _read_users(prepared) == _in_memory_users(data, split)


def test_json_lines_and_parquet_inputs_give_the_same_output(tmp_path, events):
    users, items, times = events
    rows = [dict(user_id=u, item_id=i, timestamp=int(t)) for u, i, t in zip(users, items, times)]
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    parquet = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": users, "item_id": items, "timestamp": times}), parquet)
    write_csv(tmp_path / "events.csv", users, items, times)
    data, split = load_table_split(tmp_path / "events.csv", "user_id", "item_id", "timestamp")
    expected = _in_memory_users(data, split)
    for source in (jsonl, parquet):
        prepared = _run_pipeline([source], tmp_path / source.suffix[1:], num_shards=2)
        assert len(prepared.shards) == 2
        assert prepared.vocabulary == data.vocabulary
        assert _read_users(prepared) == expected


def test_min_item_count_drops_the_events_of_rare_items_before_min_length(tmp_path):
    log = tmp_path / "events.csv"
    # a: 4 events, b: 3, c: 1 (rare). u1 keeps a b a b (4); u2 keeps a b a (3 of 4); u3 a (1).
    rows = [
        "u1,a,1",
        "u1,b,2",
        "u1,a,3",
        "u1,b,4",
        "u2,a,1",
        "u2,c,2",
        "u2,b,3",
        "u2,a,4",
        "u3,a,1",
    ]
    log.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    prepared = _run_pipeline([log], tmp_path / "out", min_item_count=2)
    assert prepared.vocabulary.ids == ("a", "b")
    assert prepared.stats["dropped"]["events_of_items_below_min_item_count"] == 1
    assert prepared.stats["dropped"]["users_below_min_length"] == 1
    assert prepared.stats["dropped"]["events_of_users_below_min_length"] == 1
    assert prepared.stats["users"] == 2 and prepared.stats["interactions"] == 7
    assert _read_users(prepared) == {
        "u1": (["a", "b"], ["a"], ["b"]),
        "u2": (["a"], ["b"], ["a"]),
    }
    # Training counts of a and b: u1's a b, u2's a.
    assert prepared.item_popularity.tolist() == [0, 2, 1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input={tmp}/nothing-*.csv"], "--input: no file matches"),
        (["--input={tmp}/events.csv", "--time_column=ts"], "no column 'ts'; available columns"),
        (["--input={tmp}/events.csv", "--min_length=2"], "--min_length=2: must be >= 3"),
        (["--input={tmp}/events.csv", "--output_dir={tmp}"], "not empty"),
    ],
)
def test_bad_flags_and_inputs_fail_in_one_line(repo_root, tmp_path, args, message):
    (tmp_path / "events.csv").write_text("user_id,item_id,timestamp\nu,a,1\n")
    args = [arg.format(tmp=tmp_path) for arg in args]
    if not any(arg.startswith("--output_dir") for arg in args):
        args.append(f"--output_dir={tmp_path / 'out'}")
    result = _preprocess(repo_root, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_a_gzip_log_with_excels_byte_order_mark_gives_the_plain_logs_output(
    repo_root, tmp_path, events
):
    users, items, times = events
    write_csv(tmp_path / "events.csv", users, items, times)
    plain = (tmp_path / "events.csv").read_bytes()
    (tmp_path / "excel.csv.gz").write_bytes(gzip.compress(codecs.BOM_UTF8 + plain))
    rows = [dict(user_id=u, item_id=i, timestamp=int(t)) for u, i, t in zip(users, items, times)]
    jsonl = codecs.BOM_UTF8 + "".join(json.dumps(row) + "\n" for row in rows).encode()
    jsonl_path = tmp_path / "excel.jsonl"
    jsonl_path.write_bytes(jsonl)
    data, split = load_table_split(tmp_path / "events.csv", "user_id", "item_id", "timestamp")
    result = _preprocess(
        repo_root, f"--input={tmp_path}/excel.csv.gz", f"--output_dir={tmp_path / 'gz'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for prepared in (load_prepared(tmp_path / "gz"), _run_pipeline([jsonl_path], tmp_path / "js")):
        assert sum(prepared.stats["dropped"]["malformed_rows"].values()) == 0
        assert prepared.vocabulary == data.vocabulary
        assert _read_users(prepared) == _in_memory_users(data, split)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"user_id;item_id;timestamp\nu;a;1\n", "one column: is the field delimiter right?"),
        (b"user_id,item_id,caf\xe9\nu,a,1\n", "events.csv: cannot read its header"),
    ],
)
def test_a_header_that_cannot_be_read_as_the_columns_is_named_in_one_line(
    repo_root, tmp_path, content, message
):
    (tmp_path / "events.csv").write_bytes(content)
    result = _preprocess(
        repo_root, f"--input={tmp_path}/events.csv", f"--output_dir={tmp_path / 'out'}"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_a_header_name_may_hold_a_quoted_line_break(tmp_path):
    from hybrid_tfrs.cli.preprocess import match_inputs

    log = tmp_path / "events.csv"
    log.write_text('user_id,"free\ntext",item_id,timestamp\nu,"a\nb",i1,1\nu,c,i2,2\n')
    assert match_inputs([str(log)], COLUMNS, None) == [str(log)]
    with open(log, "rb") as f:
        events = [value for kind, value in parse_rows(str(log), f, COLUMNS)]
    assert events == [("u", "i1", 1, 3), ("u", "i2", 2, 5)]


def test_a_log_where_no_user_is_kept_fails_and_says_why(repo_root, tmp_path):
    dates = "".join(f"u{n % 3},i{n},2024-01-0{n % 9 + 1}\n" for n in range(30))
    (tmp_path / "events.csv").write_text("user_id,item_id,timestamp\n" + dates)
    result = _preprocess(
        repo_root, f"--input={tmp_path}/events.csv", f"--output_dir={tmp_path / 'out'}"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "no user kept" in error and "30 bad_time" in error


def test_an_id_with_a_line_break_is_a_dead_letter(tmp_path):
    rows = [{"user_id": "u", "item_id": item, "timestamp": n} for n, item in enumerate("abcd")]
    rows.append({"user_id": "u", "item_id": "e\nf", "timestamp": 9})
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    prepared = _run_pipeline([log], tmp_path / "out")
    assert prepared.stats["dropped"]["malformed_rows"]["line_break"] == 1
    assert prepared.vocabulary.ids == ("a", "b", "c", "d")


def test_a_quoted_field_may_hold_line_breaks_and_a_stray_quote_costs_one_row():
    header = "user_id,item_id,timestamp,comment\n"
    rows = (
        'u1,i1,1,"two\n\nlines, and a ""quoted"" word"\n'  # lines 2-4
        'u2,i2,2,"a note\nu9,i9,5,x"\n'  # lines 5-6: line 6 alone would be an event
        'u2,"i3,3,stray\n'  # line 7: a stray quote, never closed
    )
    after = "".join(f"u3,j{n},{n},ok\n" for n in range(MAX_RECORD_LINES + 20))
    log = (header + rows + after).encode()

    parsed = list(parse_rows("events.csv", io.BytesIO(log), COLUMNS))

    events = [value for kind, value in parsed if kind == "event"]
    assert events[:2] == [("u1", "i1", 1, 2), ("u2", "i2", 2, 5)]  # named by first line
    assert events[2:] == [("u3", f"j{n}", n, 8 + n) for n in range(MAX_RECORD_LINES + 20)]
    (letter,) = [value for kind, value in parsed if kind == "dead"]
    assert (letter["line"], letter["reason"], letter["text"]) == (
        7,
        "unclosed_quote",
        'u2,"i3,3,stray',
    )
    assert f"still open on line {7 + MAX_RECORD_LINES - 1}" in letter["detail"]
