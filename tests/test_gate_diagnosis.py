"""benchmarks/gate_diagnosis.py: the alpha sweep (what a gate could gain), end to end."""

import json

import numpy as np
import pytest
from conftest import load_benchmark, run_command, train_run

diagnosis = load_benchmark("gate_diagnosis")


def test_length_buckets_cover_histories_past_the_window():
    lengths = np.array([3, 7, 250, 900, 1500])
    buckets = diagnosis.length_buckets(lengths, edges=(5, 200, 800))
    assert [label for label, _ in buckets] == ["1-5", "6-200", "201-800", "801+"]
    assert [members.nonzero()[0].tolist() for _, members in buckets] == [[0], [1], [2], [3, 4]]


def test_alpha_sweep_picks_the_best_weight_overall_and_per_bucket():
    # Users 0-1 are best served by the LinRec branch (a = 1), users 2-4 by FMLP (a = 0).
    ndcg = {
        0.0: np.array([0.0, 0.0, 1.0, 1.0, 1.0]),
        0.5: np.array([0.5, 0.5, 0.5, 0.5, 0.5]),
        1.0: np.array([1.0, 1.0, 0.0, 0.0, 0.0]),
    }
    short = np.array([True, True, False, False, False])
    gate = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    sweep = diagnosis.alpha_sweep(ndcg, [("short", short), ("long", ~short)], gate)
    assert sweep["best_alpha"] == 0.0 and sweep["best_ndcg"] == pytest.approx(0.6)
    assert sweep["by_alpha"][0.5] == pytest.approx(0.5)
    assert [b["best_alpha"] for b in sweep["buckets"]] == [1.0, 0.0]
    assert [b["ndcg_at_best_alpha"] for b in sweep["buckets"]] == [0.0, 1.0]
    assert sweep["per_bucket_best_ndcg"] == pytest.approx(1.0)
    assert sweep["model_ndcg"] == pytest.approx(0.6)
    assert [b["model_ndcg"] for b in sweep["buckets"]] == pytest.approx([0.5, 2 / 3])


def test_alpha_sweep_breaks_ties_towards_the_smaller_weight():
    flat = {a: np.full(3, 0.25) for a in (0.0, 0.3, 1.0)}
    everyone = np.ones(3, dtype=bool)
    sweep = diagnosis.alpha_sweep(flat, [("all", everyone)], np.zeros(3))
    assert sweep["best_alpha"] == 0.0 and sweep["buckets"][0]["best_alpha"] == 0.0


TINY = dict(
    dataset="synthetic",
    synthetic_users=150,
    synthetic_items=200,
    max_len=20,
    hidden_dim=16,
    epochs=1,
    batch_size=64,
    seen_item_bias=True,
    protocols="full,full-unseen",
)
TINY_FLAGS = [f"--{name}" if value is True else f"--{name}={value}" for name, value in TINY.items()]


def _train_and_diagnose(tmp_path, sweep_alphas):
    """A tiny hybrid trained and diagnosed: (its run folder, the diagnosis dict, the page)."""
    run = tmp_path / "run"
    train_run(run, "--model=hybrid", *TINY_FLAGS)
    output = tmp_path / "diagnosis.md"
    result = run_command(
        [
            "benchmarks/gate_diagnosis.py",
            f"--run_dirs={run}",
            f"--sweep_alphas={sweep_alphas}",
            f"--output={output}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (diagnosed,) = json.loads(output.with_suffix(".json").read_text())
    return run, diagnosed, output.read_text()


def test_the_script_sweeps_a_trained_hybrid(tmp_path):
    """A fixed a of 0 is the FMLP branch alone and 1 the LinRec branch alone; the
    model's own NDCG@10 (its seen-item offset included) is the trainer's."""
    run, diagnosed, page = _train_and_diagnose(tmp_path, "0,0.5,1")
    by_alpha = {float(a): value for a, value in diagnosed["sweep"]["by_alpha"].items()}
    assert sorted(by_alpha) == [0.0, 0.5, 1.0]
    assert by_alpha[0.0] == pytest.approx(diagnosed["ndcg10"]["fmlp"]["full-unseen"], abs=1e-12)
    assert by_alpha[1.0] == pytest.approx(diagnosed["ndcg10"]["linrec"]["full-unseen"], abs=1e-12)
    assert diagnosed["sweep"]["model_ndcg"] == pytest.approx(
        diagnosed["ndcg10"]["model"]["full-unseen"], abs=1e-12
    )
    trained = json.loads((run / "metrics.json").read_text())["test"]
    for protocol in ("full", "full-unseen"):
        assert diagnosed["ndcg10"]["model"][protocol] == pytest.approx(
            trained[protocol]["NDCG@10"], abs=1e-6
        )
    assert "Best single a" in page


def test_the_script_rejects_weights_outside_0_1(tmp_path):
    result = run_command(
        ["benchmarks/gate_diagnosis.py", f"--run_dirs={tmp_path}", "--sweep_alphas=0,1.5"],
        timeout=120,
    )
    assert result.returncode != 0
    assert "--sweep_alphas" in result.stderr and "Traceback" not in result.stderr


def test_a_layer_fusion_run_is_diagnosed_layer_by_layer(tmp_path):
    """--fusion=layer: alpha and the two mixers' shares per layer, alpha by length in each
    layer, and a sweep of one fixed a in every layer; the model's NDCG@10 is the trainer's."""
    from hybrid_tfrs.training import TrainConfig, train

    run = tmp_path / "run"
    config = TrainConfig(
        model="hybrid", fusion="layer", gate_mode="statistics", output_dir=str(run), **TINY
    )
    train(config, log=print)
    diagnosed = diagnosis.diagnose(str(run), None, 64, [0.0, 1.0])  # in-process: no 2nd start
    page = diagnosis.markdown(diagnosed)
    assert sorted(diagnosed["ndcg10"]) == ["model"]
    trained = json.loads((run / "metrics.json").read_text())["test"]
    for protocol in ("full", "full-unseen"):
        assert diagnosed["ndcg10"]["model"][protocol] == pytest.approx(
            trained[protocol]["NDCG@10"], abs=1e-6
        )
    layers = diagnosed["layers"]
    assert len(layers) == 2 and all(0 < layer["alpha_mean"] < 1 for layer in layers)
    buckets = diagnosed["buckets"]
    users = sum(b["users"] for b in buckets)
    for i, layer in enumerate(layers):  # the buckets partition the users
        by_bucket = sum(b["alpha_by_layer"][i] * b["users"] for b in buckets) / users
        assert by_bucket == pytest.approx(layer["alpha_mean"], abs=1e-6)
    # Filters alone and LinRec mixers alone are different models of the same weights.
    by_alpha = {float(a): v for a, v in diagnosed["sweep"]["by_alpha"].items()}
    assert sorted(by_alpha) == [0.0, 1.0] and by_alpha[0.0] != by_alpha[1.0]
    assert [f["feature"] for f in diagnosed["features"]]  # the statistics gate's inputs
    assert "alpha, layer 2" in page and "in every layer" in page
