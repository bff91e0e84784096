"""The trainer, evaluator and exporter end to end on small synthetic data.

They run through the kept ``trainers/*.py`` wrappers of ``hybrid_tfrs.cli``,
with TensorFlow's log level left to the commands themselves.
"""

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import full_ndcg_at_10, most_popular_scores

from hybrid_tfrs.data import pad_latest
from hybrid_tfrs.evaluation import METRICS, PROTOCOLS
from hybrid_tfrs.training import TrainConfig, load_split

SMALL = [
    "--dataset=synthetic",
    "--synthetic_users=500",
    "--synthetic_items=300",
    "--max_len=30",
    "--hidden_dim=32",
    "--num_layers=1",  # the commands end to end, not the depth: every run traces the model
    "--batch_size=64",
    "--learning_rate=0.003",
    "--eval_batch_size=256",
]


EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+) - loss \d+\.\d{4} - val NDCG@10 \d\.\d{4} "
    r"\(best \d\.\d{4} at epoch \d+\) - \d+\.\ds \(\d+\.\ds validation\)"
    r"(?: - alpha \d\.?\d*(?:e-\d+)?)?$"  # the hybrid's mean gate on validation
)
NOISE = ("cuInit", "Traceback", "INFO", "absl::InitializeLog", "\x1b", "\r")


def _environment():
    """The user's environment: TensorFlow's log level is the commands' business."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def _run(repo_root, script, *args, timeout=900):
    return subprocess.run(
        [sys.executable, str(repo_root / "trainers" / script), *args],
        cwd=repo_root,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run_in_terminal(repo_root, script, *args, timeout=900):
    """Runs a trainer with stdout on a pseudo-terminal; returns (exit code, output, stderr)."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, str(repo_root / "trainers" / script), *args],
        cwd=repo_root,
        env=_environment(),
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    output, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 1.0)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    process.wait(timeout=60)
    return process.returncode, output.decode(), process.stderr.read().decode()


def _screen(output):
    """The lines a terminal shows after ``output``: each carriage return redraws its line."""
    lines = []
    for raw in output.replace("\r\n", "\n").split("\n"):
        shown = ""
        for part in raw.split("\r"):
            shown = part + shown[len(part) :]
        if shown.strip():
            lines.append(shown.rstrip())
    return lines


@pytest.fixture(scope="module")
def trained_run(repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = _run(
        repo_root,
        "train.py",
        *SMALL,
        "--epochs=4",
        f"--output_dir={out}",
        f"--export_dir={out / 'export'}",
        "--top_k=7",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return out, result


def test_train_writes_a_valid_metrics_json_and_prints_the_table(trained_run):
    out, result = trained_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "synthetic" and metrics["model"] == "hybrid"
    assert metrics["config"]["max_len"] == 30
    assert metrics["data_stats"]["users"] == 500
    for part in ("valid", "test"):
        assert set(metrics[part]) == set(PROTOCOLS)
        for protocol in PROTOCOLS:
            assert set(metrics[part][protocol]) == set(METRICS)
            assert all(0.0 <= v <= 1.0 for v in metrics[part][protocol].values())
    assert 0 < metrics["test_alpha"] < 1
    # The gate's mean on the validation users, epoch by epoch, in the log line too.
    assert all(0 < row["val_alpha"] < 1 for row in metrics["history"])
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert all(" - alpha " in line for line in epoch_lines)
    assert metrics["epochs_trained"] == 4 and 1 <= metrics["best_epoch"] <= 4
    assert "NDCG@10" in result.stdout and "uniform-99" in result.stdout
    assert [EPOCH_LINE.match(line).groups() for line in epoch_lines] == [
        (str(epoch), "4") for epoch in range(1, 5)
    ], epoch_lines
    for name in ("config.json", "vocabulary.txt", "model.keras", "checkpoints/last-4.keras"):
        assert (out / name).exists(), name
    assert any((out / "tensorboard").rglob("*tfevents*"))


def test_a_logged_run_is_quiet_and_plain(trained_run):
    _, result = trained_run
    log = result.stdout + result.stderr
    assert not [noise for noise in NOISE if noise in log], log[-3000:]
    assert result.stderr == "", result.stderr[-3000:]


def test_train_exports_the_best_model_for_serving(trained_run):
    import tensorflow as tf

    out, result = trained_run
    versions = [p for p in (out / "export" / "hybrid").iterdir() if p.name.isdigit()]
    assert len(versions) == 1 and (versions[0] / "saved_model.pb").exists()
    assert f"exported {versions[0]}" in result.stdout
    loaded = tf.saved_model.load(str(versions[0]))
    vocabulary = (out / "vocabulary.txt").read_text().split()
    answer = loaded.signatures["recommend"](
        history=tf.constant([vocabulary[:5]]), k=tf.constant(7), exclude_history=tf.constant(False)
    )
    assert answer["item_ids"].shape == (1, 7)


def test_a_rerun_of_the_finished_run_publishes_no_copy_of_its_export(repo_root, trained_run):
    out, _ = trained_run
    (version,) = [p for p in (out / "export" / "hybrid").iterdir() if p.name.isdigit()]
    source = json.loads((version / "assets.extra" / "export.json").read_text())["source"]
    assert (source["run_dir"], source["epochs_trained"], source["finished"]) == (str(out), 4, True)
    args = (*SMALL, "--epochs=4", f"--output_dir={out}", f"--export_dir={out / 'export'}")
    result = _run(repo_root, "train.py", *args, "--top_k=7")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"already exported as {version} (this run, the same settings)" in result.stdout
    assert [p for p in (out / "export" / "hybrid").iterdir() if p.name.isdigit()] == [version]


def test_only_the_same_model_file_counts_as_already_exported(trained_run, tmp_path):
    from hybrid_tfrs.export import export_run
    from hybrid_tfrs.training import load_run_model

    out, _ = trained_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    first = export_run(str(run), str(tmp_path / "e"), top_k=7, unless_exported=True)
    assert export_run(str(run), str(tmp_path / "e"), top_k=7, unless_exported=True) == first
    model = load_run_model(str(run / "model.keras"))  # as if retrained over the same epochs
    model.set_weights([weights + 0.01 for weights in model.get_weights()])
    model.save(str(run / "model.keras"))
    second = export_run(str(run), str(tmp_path / "e"), top_k=7, unless_exported=True)
    assert second != first and int(Path(second).name) > int(Path(first).name)


def test_trained_model_beats_most_popular(trained_run):
    out, _ = trained_run
    metrics = json.loads((out / "metrics.json").read_text())
    config = TrainConfig(**json.loads((out / "config.json").read_text()))
    _, split = load_split(config)
    most_popular = full_ndcg_at_10(
        most_popular_scores(split),
        split,
        pad_latest(split.test_histories, config.max_len),
        split.test_targets,
    )
    assert metrics["test"]["full"]["NDCG@10"] > 1.5 * most_popular, (
        metrics["test"]["full"]["NDCG@10"],
        most_popular,
    )


def test_training_resumes_from_the_last_checkpoint(repo_root, trained_run):
    out, _ = trained_run
    result = _run(repo_root, "train.py", *SMALL, "--epochs=5", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming after epoch 4" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 5
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3, 4, 5]


def test_evaluate_reproduces_the_training_metrics(repo_root, trained_run):
    out, _ = trained_run
    result = _run(
        repo_root, "evaluate.py", f"--run_dir={out}", "--splits=test", "--protocols=full,pop-100"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((out / "evaluation.json").read_text())["test"]["protocols"]
    trained = json.loads((out / "metrics.json").read_text())["test"]
    for protocol in ("full", "pop-100"):
        assert evaluated[protocol] == pytest.approx(trained[protocol], abs=1e-6)


def test_evaluate_in_small_chunks_reproduces_the_training_metrics(repo_root, trained_run, tmp_path):
    """--chunk_size=7 scores the catalogue 7 items at a time: the same ranks."""
    out, _ = trained_run
    output = tmp_path / "chunked.json"
    result = _run(
        repo_root,
        "evaluate.py",
        f"--run_dir={out}",
        "--splits=test",
        "--protocols=full,full-unseen",
        "--chunk_size=7",
        f"--output={output}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(output.read_text())["test"]["protocols"]
    trained = json.loads((out / "metrics.json").read_text())["test"]
    for protocol in ("full", "full-unseen"):
        if protocol in trained:
            assert evaluated[protocol] == pytest.approx(trained[protocol], abs=1e-6)
    assert "full" in trained


def test_export_prints_only_the_exported_path(repo_root, trained_run, tmp_path):
    out, _ = trained_run
    result = _run(
        repo_root, "export.py", f"--run_dir={out}", f"--export_dir={tmp_path}", "--version=3"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == f"{tmp_path / 'hybrid' / '3'}\n"
    assert result.stderr == "", result.stderr[-3000:]


def test_export_of_a_run_still_training_warns_and_says_so_in_export_json(
    repo_root, trained_run, tmp_path
):
    out, _ = trained_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / "metrics.json").unlink()  # as while it trains
    result = _run(repo_root, "export.py", f"--run_dir={run}", f"--export_dir={tmp_path / 'e'}")
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip())
    best = json.loads((run / "checkpoints" / "state.json").read_text())["best_epoch"]
    assert result.stderr.strip().splitlines() == [
        f"warning: {run}: its training has not finished (no metrics.json of its last epoch); "
        f"exporting its best model so far (epoch {best})"
    ]
    source = json.loads((path / "assets.extra" / "export.json").read_text())["source"]
    assert source["finished"] is False and source["best_epoch"] == best


def test_noresume_replaces_a_run_with_other_settings_and_a_terminal_sees_one_line_an_epoch(
    repo_root, trained_run, tmp_path
):
    out, _ = trained_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    old_events = {p.name for p in (run / "tensorboard").rglob("*tfevents*")}
    theirs = [run / "checkpoints" / "my_other_model.ckpt", run / "tensorboard" / "events.mine"]
    for path in theirs:  # another tool's files in the run's folders
        path.write_text("not the run's")
    args = (*SMALL, "--max_len=20", "--epochs=1", "--protocols=full", f"--output_dir={run}")
    refused = _run(repo_root, "train.py", *args, timeout=300)
    assert refused.returncode == 2 and "--max_len=30 there, 20 now" in refused.stderr

    code, output, stderr = _run_in_terminal(repo_root, "train.py", *args, "--noresume")
    assert code == 0, stderr[-3000:]
    screen = _screen(output)
    assert [line for line in screen if line.startswith("epoch ")] == [
        line for line in screen if EPOCH_LINE.match(line)
    ]
    assert len([line for line in screen if EPOCH_LINE.match(line)]) == 1, screen
    assert "\r" in output  # the live bar was drawn and erased
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["max_len"] == 20 and metrics["epochs_trained"] == 1
    assert [row["epoch"] for row in metrics["history"]] == [1]
    assert json.loads((run / "config.json").read_text())["max_len"] == 20
    assert (run / "export" / "hybrid").is_dir()  # not a file of the run: kept
    assert not old_events & {p.name for p in (run / "tensorboard").rglob("*tfevents*")}
    assert all(path.read_text() == "not the run's" for path in theirs)


def test_a_truncated_checkpoint_is_named_and_the_run_left_alone(repo_root, trained_run, tmp_path):
    out, _ = trained_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (last,) = (run / "checkpoints").glob("last-*.keras")
    last.write_bytes(last.read_bytes()[:1000])
    config_before = (run / "config.json").read_bytes()
    result = _run(repo_root, "train.py", *SMALL, "--epochs=6", f"--output_dir={run}", timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {last}: cannot be loaded"), lines
    assert "--noresume" in lines[0]
    assert (run / "config.json").read_bytes() == config_before

    best = run / "model.keras"
    best.write_bytes(best.read_bytes()[:1000])
    result = _run(repo_root, "evaluate.py", f"--run_dir={run}", timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {best}: cannot be loaded"), result.stderr[-2000:]


def test_the_training_module_is_not_a_command(repo_root):
    result = subprocess.run(
        [sys.executable, "-m", "hybrid_tfrs.training"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "hybrid-tfrs-train" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset=nope"], "unknown dataset 'nope'"),
        (["--max_len=0"], "--max_len=0: must be >= 1"),
        (["--model=gru4rec"], "--model='gru4rec'"),
        (["--dataset=beauty", "--data_dir=/nonexistent"], "Beauty.txt not found"),
        (["--hidden_dim=10", "--num_heads=4", "--synthetic_users=50"], "hidden_dim"),
        (["--synthetic_items=100", "--synthetic_users=50"], "uniform-99 needs 99 unseen items"),
        (["--protocols=full,top-1"], "--protocols"),
        (["--max_train_minutes=-1"], "--max_train_minutes=-1.0: must be >= 0"),
        (["--max_len=20", "--window_stride=21"], "--window_stride=21: must be in 0..max_len=20"),
        (["--bucket_widths=8,4"], "--bucket_widths='8,4': must be increasing positive integers"),
    ],
)
def test_bad_settings_give_a_one_line_error_and_nonzero_exit(repo_root, tmp_path, args, message):
    result = _run(repo_root, "train.py", *args, f"--output_dir={tmp_path}", timeout=300)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_evaluate_names_a_missing_run(repo_root, tmp_path):
    result = _run(repo_root, "evaluate.py", f"--run_dir={tmp_path}", timeout=300)
    assert result.returncode == 2 and "config.json not found" in result.stderr


def test_time_budget_stops_training_and_a_resumed_run_does_not_go_on(tmp_path):
    from hybrid_tfrs.training import train

    config = TrainConfig(
        synthetic_users=200,
        synthetic_items=150,
        max_len=10,
        hidden_dim=16,
        num_layers=1,
        epochs=3,
        max_train_minutes=1e-4,  # spent by the first epoch
        protocols="full",
        output_dir=str(tmp_path),
    )
    first = train(config, log=lambda *_: None)
    assert first["epochs_trained"] == 1 and first["stopped_by"] == "time budget"
    assert train(config, log=lambda *_: None)["epochs_trained"] == 1
    config.max_train_minutes = 0.0  # no limit: the resumed run trains to --epochs
    last = train(config, log=lambda *_: None)
    assert last["epochs_trained"] == 3 and last["stopped_by"] == "epochs"


def test_a_finished_run_says_whether_patience_a_budget_or_the_epoch_cap_stopped_it():
    from hybrid_tfrs.training import stopped_by

    config = TrainConfig(patience=3, max_train_minutes=10.0)
    assert stopped_by({"waited": 4, "elapsed_seconds": 60.0}, config) == "patience"
    assert stopped_by({"waited": 3, "elapsed_seconds": 600.0}, config) == "time budget"
    assert stopped_by({"waited": 3, "elapsed_seconds": 599.0}, config) == "epochs"


@pytest.mark.parametrize("model", ["hybrid", "fmlp", "sasrec", "linrec"])
@pytest.mark.parametrize("causal", [True, False])
def test_evaluation_queries_equal_the_full_width_model_outputs(model, causal):
    """score_function cuts causal histories to their length bucket and runs one graph."""
    import keras
    import numpy as np

    from hybrid_tfrs.training import build_model, score_function

    config = TrainConfig(model=model, max_len=40, hidden_dim=16, causal=causal, chunk_size=8)
    rng = np.random.default_rng(3)
    net = build_model(config, 60, rng.integers(1, 50, size=61))
    lengths = np.array([1, 3, 8, 9, 17, 33, 40, 0, 5])  # buckets 8, 16, 32, 40 and an empty row
    histories = np.zeros((len(lengths), 40), np.int32)
    for row, length in enumerate(lengths):
        histories[row, :length] = rng.integers(1, 61, size=length)
    query, alpha = net.query_embedding(histories, return_alpha=True)
    result = score_function(net)(histories)
    np.testing.assert_allclose(result["query"], keras.ops.convert_to_numpy(query), atol=2e-5)
    if model == "hybrid":
        np.testing.assert_allclose(result["alpha"], keras.ops.convert_to_numpy(alpha), atol=2e-5)
    else:
        assert alpha is None and "alpha" not in result
