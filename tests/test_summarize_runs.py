"""benchmarks/summarize_runs.py: test tables of finished runs, and where long runs stand."""

import json
import subprocess
import sys


def _summarize(repo_root, *args):
    """The script's stdout lines for ``args``; fails the test on a nonzero exit."""
    result = subprocess.run(
        [sys.executable, "benchmarks/summarize_runs.py", *map(str, args)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _run_folder(path, epochs, metrics_epochs=None, patience=10):
    (path / "checkpoints").mkdir(parents=True)
    config = {"dataset": "beauty", "model": "fmlp", "seed": 1, "patience": patience}
    (path / "config.json").write_text(json.dumps(config))
    history = [
        {"epoch": e, "val_ndcg@10": 0.01 * e, "epoch_seconds": 60.0 if e != 2 else 6000.0}
        for e in range(1, epochs + 1)
    ]
    state = {"history": history, "best_score": 0.01 * epochs, "best_epoch": epochs, "waited": 0}
    (path / "checkpoints" / "state.json").write_text(json.dumps(state))
    if metrics_epochs is not None:
        metrics = {"epochs_trained": metrics_epochs, "stopped_by": "patience"}
        (path / "metrics.json").write_text(json.dumps(metrics))


def test_the_table_tells_finished_runs_from_ones_to_resume(repo_root, tmp_path):
    _run_folder(tmp_path / "done", epochs=4, metrics_epochs=4)
    _run_folder(tmp_path / "resumed", epochs=6, metrics_epochs=4)  # metrics of a shorter run
    _run_folder(tmp_path / "going", epochs=3)
    (tmp_path / "empty").mkdir()
    lines = _summarize(
        repo_root, "--progress", *(tmp_path / n for n in ("done", "resumed", "going", "empty"))
    )
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert set(rows) == {str(tmp_path / n) for n in ("done", "resumed", "going")}
    assert rows[str(tmp_path / "done")].endswith("| finished: patience |")
    assert "in progress" in rows[str(tmp_path / "resumed")]
    going = rows[str(tmp_path / "going")].split(" | ")
    # 3 epochs, best 0.03 at 3; the median epoch (1 min) ignores the paused 100-minute one.
    assert going[5:11] == ["3", "0.0300 (3)", "0.0300", "0 / 10", "1.0", "0.1"]


def test_the_test_table_names_runs_by_their_last_two_folders(repo_root, tmp_path):
    run = tmp_path / "beauty" / "hybrid-cosine" / "seed0"
    run.mkdir(parents=True)
    metrics = {
        "dataset": "beauty",
        "model": "hybrid",
        "test": {"full": {"NDCG@10": 0.0368}},
        "best_epoch": 20,
        "epochs_trained": 31,
        "mean_epoch_seconds": 300.0,  # a paused epoch inflates the mean
        "median_epoch_seconds": 113.0,
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert _summarize(repo_root, run, "--protocols=full", "--metrics=NDCG@10")[2] == (
        "| hybrid-cosine/seed0 | beauty | hybrid | full | 0.0368 | 20 | 31 | 113 |"
    )
