"""benchmarks/seen_items.py: history items in the top-10, by hand and end to end."""

import json

import numpy as np
import pytest
from conftest import load_benchmark, run_command, train_run

seen_items = load_benchmark("seen_items")


def test_counts_by_hand():
    # User 0 read 1, 2, 3 (latest 3), user 1 read 5; their top-10 are 1..10.
    top = np.arange(1, 11)[None, :].repeat(2, axis=0)
    histories = np.array([[1, 2, 3, 0], [5, 0, 0, 0]])
    count, latest = seen_items.seen_in_top(top, histories)
    assert count.tolist() == [3, 1]
    assert latest[0, :3].tolist() == [True, True, True] and not latest[0, 3:].any()
    assert latest[1].tolist() == [True, False, False, False, False]  # only one item
    count, latest = seen_items.seen_in_top(top + 10, histories)  # 11..20: none seen
    assert count.tolist() == [0, 0] and not latest.any()


def test_items_from_before_the_window_by_hand():
    top = np.array([[7, 1, 2, 9], [4, 5, 6, 8]])
    # User 0 read 7, 1, 9, 2 (window 2: 9, 2); user 1 read 8 (all in the window).
    whole = [[7, 1, 9, 2], [8]]
    assert seen_items.earlier_in_top(top, whole, window=2).tolist() == [2, 0]  # 7 and 1


def test_the_script_agrees_with_the_runs_own_evaluation(tmp_path):
    """Its NDCG@10 (the run's best model on the test users, offset included)
    equals the test metrics the trainer wrote; other offsets are tried."""
    run = tmp_path / "run"
    train_run(
        run,
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
    )
    output = tmp_path / "seen.md"
    result = run_command(
        [
            "benchmarks/seen_items.py",
            f"--run_dirs={run}",
            f"--output={output}",
            "--try_offsets=-50,0",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (diagnosed,) = json.loads(output.with_suffix(".json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    for protocol in ("full", "full-unseen"):
        assert diagnosed["ndcg@10"][protocol] == pytest.approx(
            metrics[protocol]["NDCG@10"], abs=1e-6
        )
    assert diagnosed["seen_item_bias"] != 0.0  # trained, and reported
    tried = diagnosed["ndcg@10_with_offset"]
    assert list(tried) == ["-50.0", "0.0"]
    assert all(0.0 <= v[p] <= 1.0 for v in tried.values() for p in ("full", "full-unseen"))
    page = output.read_text()
    assert "learned offset" in page and "learned offset replaced by each value" in page
