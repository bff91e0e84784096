"""benchmarks/seen_items.py: history items in the top-10, by hand and end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, load_benchmark

seen_items = load_benchmark("seen_items")


def test_ranks_and_counts_by_hand():
    # 12 items; user 0 read 1, 2, 3 (latest 3), user 1 read 5.
    scores = np.linspace(1.0, 0.0, 13)[None, :].repeat(2, axis=0)  # item 1 best, item 12 worst
    scores[:, 0] = -np.inf
    histories = np.array([[1, 2, 3, 0], [5, 0, 0, 0]])
    targets = np.array([4, 11])
    top, full, unseen = seen_items.top_items_and_ranks(scores, [[1, 2, 3], [5]], targets)
    assert top[0].tolist() == list(range(1, 11))
    assert full.tolist() == [4, 11]  # three items above item 4; ten above item 11
    assert unseen.tolist() == [1, 10]  # without the seen ones
    count, latest = seen_items.seen_in_top(top, histories)
    assert count.tolist() == [3, 1]
    assert latest[0, :3].tolist() == [True, True, True] and not latest[0, 3:].any()
    assert latest[1].tolist() == [True, False, False, False, False]  # only one item


def test_the_script_agrees_with_the_runs_own_evaluation(tmp_path):
    """Its NDCG@10 (scored by ``score_items``, offset included) equals the test
    metrics the trainer wrote (scored by the evaluation's own path)."""
    run = tmp_path / "run"
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybrid_tfrs.cli.train",
            "--model=sasrec",
            "--seen_item_bias",
            "--dataset=synthetic",
            "--synthetic_users=150",
            "--synthetic_items=200",
            "--max_len=20",
            "--hidden_dim=16",
            "--num_heads=1",
            "--epochs=2",
            "--batch_size=32",
            "--learning_rate=0.01",
            "--protocols=full,full-unseen",
            f"--output_dir={run}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    output = tmp_path / "seen.md"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "seen_items.py"),
            f"--run_dirs={run}",
            f"--output={output}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (diagnosed,) = json.loads(output.with_suffix(".json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    for protocol in ("full", "full-unseen"):
        assert diagnosed["ndcg@10"][protocol] == pytest.approx(
            metrics[protocol]["NDCG@10"], abs=1e-6
        )
    assert diagnosed["seen_item_bias"] != 0.0  # trained, and reported
    assert "learned offset" in output.read_text()
