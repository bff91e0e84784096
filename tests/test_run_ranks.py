"""Runs keep every test user's rank (test_ranks.npz); hybrid-tfrs-evaluate writes it later."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hybrid_tfrs.evaluation import metrics_from_ranks
from hybrid_tfrs.significance import paired_test, per_user_metric, read_ranks
from hybrid_tfrs.training import TrainConfig, load_split, train

PROTOCOLS = ("full", "full-unseen", "uniform-99")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One epoch of the hybrid on 200 synthetic users: (run folder, metrics, config)."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        synthetic_users=200,
        synthetic_items=300,
        max_len=20,
        hidden_dim=16,
        epochs=1,
        protocols=",".join(PROTOCOLS),
        output_dir=str(out),
    )
    metrics = train(config, log=lambda *_: None)
    return out, metrics, config


def test_the_ranks_reproduce_metrics_json_exactly(run):
    out, metrics, config = run
    ranks = read_ranks(out / "test_ranks.npz")
    _, split = load_split(config)
    assert ranks.split == "test" and ranks.user_ids.tolist() == list(split.user_ids)
    assert set(ranks.ranks) == set(PROTOCOLS)
    written = json.loads((out / "metrics.json").read_text())["test"]
    for protocol, values in ranks.ranks.items():
        assert values.dtype == np.int32 and values.shape == (200,)
        assert metrics_from_ranks(values) == written[protocol]  # exactly, every metric
        ndcg = per_user_metric(values, "NDCG@10")  # metrics.json sums exactly (math.fsum)
        assert math.fsum(ndcg) / len(ndcg) == written[protocol]["NDCG@10"]
    assert metrics["test"] == written
    assert not [name for name in os.listdir(out) if ".tmp" in name]


def test_evaluate_writes_the_ranks_of_a_run_trained_without_them(repo_root, run, tmp_path):
    out, _, config = run
    old = tmp_path / "old_run"  # a copy without test_ranks.npz, as runs trained before
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("test_ranks.npz", "tensorboard"))
    result = _evaluate_test_ranks(repo_root, old, config, "full,full-unseen")
    assert f"wrote {old / 'test_ranks.npz'}\n" in result.stdout
    evaluated = json.loads((old / "evaluation.json").read_text())["test"]
    assert "ranks" not in evaluated  # the ranks go to the .npz only
    written, trained = read_ranks(old / "test_ranks.npz"), read_ranks(out / "test_ranks.npz")
    assert set(written.ranks) == {"full", "full-unseen"}
    np.testing.assert_array_equal(written.user_ids, trained.user_ids)
    for protocol in ("full", "full-unseen"):
        assert metrics_from_ranks(written.ranks[protocol]) == evaluated["protocols"][protocol]
        np.testing.assert_array_equal(written.ranks[protocol], trained.ranks[protocol])
    same = paired_test(written.ranks["full"], trained.ranks["full"], num_bootstrap=100)
    assert same["difference"] == 0.0 and same["p_bootstrap"] == 1.0


def test_evaluating_fewer_protocols_keeps_the_others_ranks(repo_root, run, tmp_path):
    out, _, config = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("tensorboard"))
    result = _evaluate_test_ranks(repo_root, copy, config, "full")
    assert "(kept full-unseen, uniform-99 from before)" in result.stdout
    written, trained = read_ranks(copy / "test_ranks.npz"), read_ranks(out / "test_ranks.npz")
    assert set(written.ranks) == set(PROTOCOLS)
    for protocol in PROTOCOLS:
        np.testing.assert_array_equal(written.ranks[protocol], trained.ranks[protocol])


def _evaluate_test_ranks(repo_root, run_dir, config, protocols):
    """hybrid-tfrs-evaluate --splits=test --write_ranks on ``run_dir``; the finished process."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybrid_tfrs.cli.evaluate",
            f"--run_dir={run_dir}",
            "--splits=test",
            f"--protocols={protocols}",
            f"--batch_size={config.eval_batch_size}",
            "--write_ranks",
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result
