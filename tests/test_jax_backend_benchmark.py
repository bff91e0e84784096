"""benchmarks/jax_backend.py: the campaign's runs on JAX, on a machine without TensorFlow,
and the numpy batches it trains on."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, _child_env

from hybrid_tfrs.data.examples import bucketed_batch_rows, length_buckets


def test_bucketed_batches_give_every_row_once_an_epoch_in_its_own_bucket():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 21, size=37)
    inputs = np.array([np.pad(np.arange(1, n + 1), (0, 20 - n)) for n in lengths], np.int32)
    widths = [4, 8, 20]
    orders = []
    for _ in range(2):
        batches = bucketed_batch_rows(length_buckets(inputs, widths), 5, rng)
        for rows in batches:
            assert 1 <= len(rows) <= 5
            buckets = np.searchsorted(widths[:-1], np.count_nonzero(inputs[rows], axis=1))
            assert len(set(buckets)) == 1, "a batch holds one length bucket"
        everything = np.concatenate(batches)
        assert sorted(everything) == list(range(len(inputs))), "every row once"
        orders.append(everything)
    assert not np.array_equal(*orders), "every epoch comes in a new order"
    per_bucket = np.bincount(np.searchsorted(widths[:-1], lengths))
    assert len(batches) == sum(-(-n // 5) for n in per_bucket), "one short batch a bucket at most"


@pytest.mark.parametrize("width", ["--full_width", "--nofull_width"])  # GPU's, CPU's default
def test_runs_train_without_tensorflow_and_write_records_and_paired_tests(tmp_path, width):
    blocked = tmp_path / "no_tensorflow"  # as on the GPU machine: TensorFlow cannot be imported
    blocked.mkdir()
    (blocked / "tensorflow.py").write_text("raise ImportError('no TensorFlow here')\n")
    env = _child_env(
        {
            "KERAS_BACKEND": "jax",
            "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",  # tiny graphs: compiling is most of the time
            "PYTHONPATH": os.pathsep.join([str(blocked), str(REPO_ROOT)]),
        }
    )
    output = tmp_path / "out"
    overrides = "epochs=1,synthetic_users=120,max_len=20,hidden_dim=16,num_layers=1"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/jax_backend.py",
            "--dataset=synthetic",
            "--runs=hybrid,fmlp",
            "--seeds=0",
            f"--override={overrides}",
            "--parallel=2",
            width,
            f"--output_dir={output}",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = "".join(path.read_text() for path in output.glob("synthetic/*/seed0/train.log"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + logs[-3000:]
    for name in ("hybrid", "fmlp"):
        record = json.loads((output / "synthetic" / name / "seed0" / "metrics.json").read_text())
        assert record["backend"] == "jax" and record["epochs_trained"] == 1
        assert record["stopped_by"] == "epochs" and record["best_epoch"] == 1
        assert set(record["test"]) == {"full", "full-unseen", "uniform-99", "pop-100"}
        assert (output / "synthetic" / name / "seed0" / "test_ranks.npz").exists()
    summary = (output / "synthetic_summary.md").read_text()
    assert "| full | hybrid | fmlp |" in summary, summary  # the paired test of the two


@pytest.mark.parametrize(
    "args, message",
    [
        (["--runs=hybrid,fmlp-9-layers"], "--runs: unknown ['fmlp-9-layers']"),
        (["--runs=hybrid-last-position"], "--runs: hybrid-last-position trains for the hybrid's"),
        (["--runs=hybrid", "--override=causal=false"], "--runs: hybrid is bidirectional"),
    ],
)
def test_runs_it_cannot_train_as_the_trainer_would_are_refused_in_one_line(args, message):
    result = subprocess.run(
        [sys.executable, "benchmarks/jax_backend.py", "--dataset=synthetic", *args],
        cwd=REPO_ROOT,
        env=_child_env({"KERAS_BACKEND": "jax"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
