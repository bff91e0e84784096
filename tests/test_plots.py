"""benchmarks/plots.py: one figure per recipe, so that neither is crowded."""

import sys

from conftest import REPO_ROOT, load_benchmark, run_python

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # the scripts import each other by name
plots = load_benchmark("plots")


def _metrics(alpha=None):
    """The fields of a run's metrics.json that the plots read, for two epochs."""
    bucket = {"bucket": "1-5", "users": 3, "alpha": alpha, "metrics": {"full": {"NDCG@10": 0.05}}}
    history = [
        {"epoch": epoch, "val_ndcg@10": score, "epoch_seconds": 30.0}
        for epoch, score in ((1, 0.02), (2, 0.04))
    ]
    return {"test_alpha": alpha, "test_buckets": [bucket], "history": history}


def _runs():
    return {
        ("beauty", "hybrid", None, None): [_metrics(alpha=0.3), _metrics(alpha=0.2)],
        ("beauty", "fmlp", None, None): [_metrics()],
        ("beauty", "fmlp-batch-loss", None, None): [_metrics()],
        ("ml-1m", "sasrec", None, None): [_metrics()],
    }


def test_split_by_recipe_keeps_batch_loss_runs_apart():
    parts = dict(plots._split_by_recipe(plots._by_dataset(_runs())))
    assert {d: sorted(m) for d, m in parts[""].items()} == {
        "beauty": ["fmlp", "hybrid"],
        "ml-1m": ["sasrec"],
    }
    # ML-1M has no batch-mean run, so its panel is left out of that figure.
    assert {d: sorted(m) for d, m in parts["_batch_loss"].items()} == {
        "beauty": ["fmlp-batch-loss"]
    }


def test_colours_are_distinct_and_shared_across_datasets():
    grouped = plots._by_dataset(_runs())
    colours = plots._colours(grouped)
    assert len(set(colours.values())) == len(colours) == 4
    assert colours["hybrid"] == plots.plt.get_cmap("tab10").colors[0]


def test_draw_all_writes_a_gate_plot_only_where_a_gated_model_ran(tmp_path):
    paths = plots.draw_all(_runs(), str(tmp_path))
    names = [p.rsplit("/", 1)[1] for p in paths]
    assert names == [
        "ndcg_by_length.png",
        "alpha_by_length.png",
        "validation_curves.png",
        "validation_curves_batch_loss.png",
    ]
    assert all((tmp_path / name).stat().st_size > 0 for name in names)


PAGE_SCRIPT = r"""
import sys
sys.path.insert(0, "benchmarks")
import accuracy
page = accuracy.markdown([], ["python benchmarks/accuracy.py"], "test machine",
                         plots=["validation_curves.png", "validation_curves_batch_loss.png"])
assert "## Plots\n\n![validation curves](validation_curves.png)\n" in page, page
assert "![validation curves batch loss](validation_curves_batch_loss.png)" in page, page
assert "## Plots" not in accuracy.markdown([], [], "test machine")
print("OK")
"""


def test_the_accuracy_page_shows_the_plots_it_drew():
    # A fresh interpreter: accuracy.py defines absl flags that other benchmarks define too.
    result = run_python(PAGE_SCRIPT, {})
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr[-3000:]
