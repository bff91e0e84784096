"""Own data from the command line (--data_file): formats, order, flags and errors.

Issue 14 item 1. Flag and file errors are one line, exit 2, before TensorFlow loads.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybrid_tfrs.config import TrainConfig
from hybrid_tfrs.data import DataError
from hybrid_tfrs.data.own import load_table_split

# Events in file order; u1's items b and c share time 3 (file order: c then b).
EVENTS = [
    ("u1", "a", 1),
    ("u2", "b", 10),
    ("u1", "c", 3),
    ("u1", "b", 3),
    ("u2", "a", 11),
    ("u1", "d", 2),
    ("u2", "c", 12),
    ("u3", "a", 1),
]
# By time, stable: u1 = a d c b, u2 = b a c; u3 (1 event) is skipped.
EXPECTED_SEQUENCES = {"u1": ["a", "d", "c", "b"], "u2": ["b", "a", "c"]}
# By frequency (a 3, b 2, c 2, d 1), ties by id.
EXPECTED_VOCABULARY = ("a", "b", "c", "d")


def _write(path, events=EVENTS, header=("user_id", "item_id", "timestamp"), sep=","):
    lines = [sep.join(header)] + [sep.join(map(str, event)) for event in events]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_jsonl(path, events=EVENTS):
    rows = [json.dumps(dict(user_id=u, item_id=i, timestamp=t)) for u, i, t in events]
    path.write_text("\n".join(rows) + "\n")
    return path


def _write_parquet(path, events=EVENTS):
    users, items, times = zip(*events)
    pq.write_table(
        pa.table({"user_id": list(users), "item_id": list(items), "timestamp": list(times)}), path
    )
    return path


def _sequences(data, split):
    decode = data.vocabulary.decode
    return {
        user: decode(np.append(history, target))
        for user, history, target in zip(split.user_ids, split.test_histories, split.test_targets)
    }


@pytest.mark.parametrize(
    "name, write",
    [
        ("events.csv", _write),
        ("events.tsv", lambda p: _write(p, sep="\t")),
        ("events.jsonl", _write_jsonl),
        ("events.parquet", _write_parquet),
    ],
)
def test_every_format_gives_the_same_split_ties_in_file_order(tmp_path, name, write):
    data, split = load_table_split(write(tmp_path / name), "user_id", "item_id", "timestamp")
    assert data.vocabulary.ids == EXPECTED_VOCABULARY
    assert _sequences(data, split) == EXPECTED_SEQUENCES
    assert split.skipped_users == 1
    assert split.item_popularity.tolist() == [0, 1, 1, 0, 1]  # a, b, c, d in u1 and u2's train


def test_without_time_column_file_order_is_time_order(tmp_path):
    data, split = load_table_split(_write(tmp_path / "events.csv"), "user_id", "item_id", "")
    assert _sequences(data, split) == {"u1": ["a", "c", "b", "d"], "u2": ["b", "a", "c"]}


def test_other_column_names_and_delimiter(tmp_path):
    path = _write(tmp_path / "events.txt", header=("who", "what", "when"), sep=";")
    data, split = load_table_split(path, "who", "what", "when", sep=";")
    assert _sequences(data, split) == EXPECTED_SEQUENCES


@pytest.mark.parametrize(
    "name, content, location, words",
    [
        ("e.csv", "user_id,item_id,timestamp\nu1,a,1\nu1,,2\n", "e.csv:3:", "empty item_id"),
        ("e.csv", "user_id,item_id,timestamp\nu1,a,soon\n", "e.csv:2:", "timestamp 'soon'"),
        ("e.csv", "user_id,item_id,timestamp\nu1,a\n", "e.csv:2:", "expected 3 fields"),
        (
            "e.jsonl",
            '{"user_id": "u", "item_id": "a", "timestamp": 1}\n{"user_id": ',
            "e.jsonl:2:",
            "not a JSON object",
        ),
        ("e.jsonl", '{"user_id": "u", "timestamp": 1}\n', "e.jsonl:1:", "no field 'item_id'"),
        (
            "e.jsonl",
            '{"user_id": "u", "item_id": "", "timestamp": 1}\n',
            "e.jsonl:1:",
            "empty item_id",
        ),
        ("e.csv", "user,item_id,timestamp\nu1,a,1\n", "e.csv:", "no column 'user_id'"),
    ],
)
def test_errors_name_file_line_and_column(tmp_path, name, content, location, words):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError) as info:
        load_table_split(tmp_path / name, "user_id", "item_id", "timestamp")
    assert location in str(info.value) and words in str(info.value), str(info.value)


def test_parquet_errors_name_the_row(tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"user_id": ["u", None], "item_id": ["a", "b"]}), path)
    with pytest.raises(DataError, match=r"e.parquet:row 2: empty user_id"):
        load_table_split(path, "user_id", "item_id")


def test_the_data_settings_are_part_of_the_run_config():
    base = TrainConfig(dataset="own", data_file="events.csv")
    for field, value in [
        ("user_column", "who"),
        ("item_column", "what"),
        ("time_column", ""),
        ("delimiter", ";"),
    ]:
        other = TrainConfig(**{**base.to_json(), field: value})
        assert field in other.differences(base)
    # the file may move: the data itself is checked (test_a_rerun_on_changed_data_...)
    assert TrainConfig(**{**base.to_json(), "data_file": "moved.csv"}).differences(base) == {}
    assert TrainConfig(delimiter="tab").delimiter_char == "\t"
    assert TrainConfig(delimiter="\\t").delimiter_char == "\t"


def _train_cli(repo_root, tmp_path, *args):
    """Runs hybrid-tfrs-train in a fresh interpreter; prints the exit code and whether TF loaded."""
    code = f"""
        import sys
        from hybrid_tfrs.cli import train
        try:
            train.run(["hybrid-tfrs-train", "--output_dir={tmp_path / "run"}", *{list(args)!r}])
        except SystemExit as exit:
            print("exit", exit.code, "tensorflow" in sys.modules)
    """
    env = {"PYTHONPATH": str(repo_root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset=beauty"], "--dataset='beauty': cannot be combined with --data_file"),
        (["--config=synthetic_hybrid"], "--dataset='synthetic': cannot be combined"),
        (["--delimiter=;;"], "--delimiter=';;': must be one character"),
        (["--time_column=ts"], "no column 'ts'; available columns: 'user_id', 'item_id', "),
        (["--item_column=item"], "--time_column= keeps file order"),
    ],
)
def test_bad_own_data_flags_fail_in_one_line_before_tensorflow(repo_root, tmp_path, args, message):
    path = _write(tmp_path / "events.csv")
    result = _train_cli(repo_root, tmp_path, f"--data_file={path}", *args)
    assert result.stdout.strip() == "exit 2 False", result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_missing_data_file_is_named(repo_root, tmp_path):
    result = _train_cli(repo_root, tmp_path, f"--data_file={tmp_path / 'absent.csv'}")
    assert result.stdout.strip() == "exit 2 False"
    assert result.stderr.strip() == f"error: {tmp_path / 'absent.csv'}: no such file"


def test_dataset_own_needs_a_data_file():
    with pytest.raises(ValueError, match="--dataset='own': needs --data_file"):
        TrainConfig(dataset="own").validate()


def test_a_rerun_on_changed_data_is_refused_before_anything_is_written(tmp_path):
    """The run keeps a summary of its data; a resume on other data (new events with new
    items, or items renamed) stops, naming what changed, and leaves the run as it was."""
    from hybrid_tfrs.run_dir import RunDirError
    from hybrid_tfrs.training import train

    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{rng.integers(20)}", t) for u in range(40) for t in range(6)]
    log = tmp_path / "events.csv"
    original = "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows)
    log.write_text(original)
    run = tmp_path / "run"
    settings = dict(dataset="own", data_file=str(log), max_len=8, hidden_dim=8, epochs=1)
    settings.update(protocols="full", output_dir=str(run))
    train(TrainConfig(**settings), log=lambda _: None)
    files = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}

    def refused(message):
        with pytest.raises(RunDirError, match=message):
            train(TrainConfig(**{**settings, "epochs": 2}), log=lambda _: None)
        assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == files

    with open(log, "a", encoding="utf-8") as handle:  # new events, with new items
        handle.write("".join(f"u{u},new{u},9\n" for u in range(5)))
    refused(r"trained on other data \(items 20 there, 25 now; interactions 240 there, 245 now\)")
    log.write_text(log.read_text().replace("new", "i"))  # no new item: counts change
    refused(r"trained on other data \(interactions 240 there, 245 now\)")
    log.write_text(original.replace("i1,", "x1,"))  # one item renamed: the same numbers
    refused(r"the same numbers of users, items and events, but other item ids or counts")
    state = run / "checkpoints" / "state.json"  # as a run trained before summaries were kept
    state.write_text(
        json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "data"})
    )
    files[state] = state.read_bytes()
    refused(r"trained on other data \(its vocabulary.txt names other items than the data\)")


def test_evaluate_refuses_other_data_and_reads_a_moved_file(tmp_path):
    """hybrid-tfrs-evaluate checks the data as a resume does (events added since would
    score the items under other ids); a moved --data_file is named, and both evaluate
    and a resume take its new place."""
    from conftest import run_command

    from hybrid_tfrs.training import train

    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{rng.integers(20)}", t) for u in range(40) for t in range(6)]
    log = tmp_path / "events.csv"
    log.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    run = tmp_path / "run"
    settings = dict(dataset="own", data_file=str(log), max_len=8, hidden_dim=8, epochs=1)
    settings.update(protocols="full", output_dir=str(run))
    train(TrainConfig(**settings), log=lambda _: None)
    moved = log.rename(tmp_path / "moved.csv")

    def evaluate(*flags):
        args = ["-m", "hybrid_tfrs.cli.evaluate", f"--run_dir={run}", "--splits=test", *flags]
        return run_command([*args, "--protocols=full"], timeout=300)

    gone = evaluate()
    assert gone.returncode == 2
    assert gone.stderr.strip().splitlines() == [
        f"error: {log}: no such file (the run's --data_file; a relative path is read from the "
        "current folder: pass --data_file=<where it is now>)"
    ]
    found = evaluate(f"--data_file={moved}")
    assert found.returncode == 0 and "wrote" in found.stdout, found.stderr[-2000:]
    train(TrainConfig(**{**settings, "data_file": str(moved), "epochs": 2}), log=lambda _: None)
    written = (run / "evaluation.json").read_bytes()
    with open(moved, "a", encoding="utf-8") as handle:  # new events, with new items
        handle.write("".join(f"u{u},new{u},9\n" for u in range(5)))
    refused = evaluate(f"--data_file={moved}")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: --run_dir={run} was trained on other data (items 20 there, 25 now; "
        "interactions 240 there, 245 now); evaluate it on the data it was trained on "
        "(--data_dir, --data_file)"
    ]
    assert (run / "evaluation.json").read_bytes() == written
