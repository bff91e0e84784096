"""benchmarks/campaign_plan.py: the campaign's runs, each parsed with the trainer's flags."""

import subprocess
import sys

import pytest
from absl import app
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import campaign_plan  # noqa: E402


def test_an_ablation_for_some_datasets_is_skipped_on_the_others(capsys):
    plan = campaign_plan.run_plan(["beauty", "ml-1m"], [], ["hybrid-stride-100"], ["0"])
    assert capsys.readouterr().out == "beauty hybrid-stride-100: skipped, for ml-1m only\n"
    stride = {"window_stride": "100"}
    assert plan == [("ml-1m", "hybrid-stride-100", "flags/ml-1m_hybrid.flags", stride, 0)]


def test_a_boolean_set_bare_in_the_flagfile_is_read_as_true_or_false(tmp_path):
    """beauty_hybrid.flags says --seen_item_bias: turning it off is a change to train; a
    flagfile saying --noseen_item_bias already is the ablation."""
    off = {"seen_item_bias": "false"}
    plan = campaign_plan.run_plan(["beauty"], [], ["hybrid-no-seen-bias"], ["0"])
    assert plan == [("beauty", "hybrid-no-seen-bias", "flags/beauty_hybrid.flags", off, 0)]
    flagfile = tmp_path / "off.flags"
    flagfile.write_text("--seen_item_bias\n--noseen_item_bias\n--dropout=0.5\n")
    assert campaign_plan.changes_nothing(off, str(flagfile))


def test_an_override_is_compared_as_the_trainer_parses_it(tmp_path):
    """5e-4 is the flagfile's 0.0005: no run to make; a value the trainer refuses or a flag
    it does not have stops the plan, naming the flagfile, before hours of other runs."""
    flagfile = tmp_path / "lr.flags"
    flagfile.write_text("--learning_rate=0.0005\n--model=fmlp\n")
    assert campaign_plan.changes_nothing({"learning_rate": "5e-4"}, str(flagfile))
    assert not campaign_plan.changes_nothing({"learning_rate": "1e-3"}, str(flagfile))
    for bad in ({"learning_rate": "fast"}, {"num_layerz": "4"}):
        with pytest.raises(app.UsageError, match="lr.flags"):
            campaign_plan.changes_nothing(bad, str(flagfile))


def test_capacity_matched_baselines_run_the_baseline_flagfile_with_more_layers():
    plan = campaign_plan.run_plan(["ml-1m"], [], ["fmlp-4-layers", "hybrid-vector-gate"], ["1"])
    assert plan == [
        ("ml-1m", "fmlp-4-layers", "flags/ml-1m_fmlp.flags", {"num_layers": "4"}, 1),
        (
            "ml-1m",
            "hybrid-vector-gate",
            "flags/ml-1m_hybrid.flags",
            {**campaign_plan.TWO_STACKS, "gate_mode": "statistics", "gate_output": "vector"},
            1,
        ),
    ]


def test_the_hybrid_is_the_filter_trunk_and_its_ablations_keep_the_layout_they_were_run_on():
    """The flagfiles' hybrid reads a 2-block FMLP-Rec trunk since 5 December 2026: the
    trunk's ablation is skipped as its copy, the two stacks it replaced are an ablation, the
    gate and layout ablations and the batch-mean runs keep the layout their records were
    trained on, and a recipe A/B changes one flag of today's hybrid."""
    for dataset in ("beauty", "ml-1m"):
        config = campaign_plan.flagfile_config(f"flags/{dataset}_hybrid.flags", {})
        assert (config.num_layers, config.shared_blocks) == (3, 2)
    names = [
        "hybrid-filter-trunk",
        "hybrid-two-stacks",
        "hybrid-shared-first-block",
        "hybrid-filter-trunk-fixed-alpha",
        "hybrid-batch-loss",
        "hybrid-adamw",
    ]
    plan = campaign_plan.run_plan(["ml-1m"], ["hybrid"], names, ["0"])
    layouts = {
        name: campaign_plan.flagfile_config(flagfile, fields)
        for _, name, flagfile, fields, _ in plan
    }
    assert "hybrid-filter-trunk" not in layouts
    assert {name: (c.num_layers, c.shared_blocks) for name, c in layouts.items()} == {
        "hybrid": (3, 2),
        "hybrid-two-stacks": (2, 0),
        "hybrid-shared-first-block": (2, 1),
        "hybrid-filter-trunk-fixed-alpha": (3, 2),
        "hybrid-batch-loss": (2, 0),
        "hybrid-adamw": (3, 2),
    }
    assert layouts["hybrid-filter-trunk-fixed-alpha"].gate_mode == "fixed"


def test_the_hybrid_learns_one_alpha_and_its_batch_mean_a_b_runs_keep_the_statistics_gate():
    """The flagfiles' hybrid blends with one learned alpha since 4 December 2026; an A/B
    trained as before 3 December (-batch-loss) keeps the statistics gate it was trained with,
    so its records stay valid, and hybrid-batch-loss is the default hybrid with the mean."""
    for dataset in ("beauty", "ml-1m"):
        config = campaign_plan.flagfile_config(f"flags/{dataset}_hybrid.flags", {})
        assert config.gate_mode == "learned"
    names = [
        "hybrid-statistics-gate",
        "hybrid-batch-loss",
        "hybrid-no-seen-bias",
        "hybrid-no-seen-bias-batch-loss",
    ]
    plan = campaign_plan.run_plan(["ml-1m"], [], names, ["0"])
    overrides = {name: fields for _, name, _, fields, _ in plan}
    two_stacks = campaign_plan.TWO_STACKS
    assert overrides["hybrid-statistics-gate"] == {**two_stacks, "gate_mode": "statistics"}
    assert overrides["hybrid-batch-loss"] == {**two_stacks, "loss_normalization": "batch"}
    assert overrides["hybrid-no-seen-bias"] == {"seen_item_bias": "false"}
    assert overrides["hybrid-no-seen-bias-batch-loss"]["gate_mode"] == "statistics"


def test_every_ablation_sets_flags_the_trainer_has(capsys):
    """A misspelt flag or a refused value in ABLATIONS would only fail hours into a campaign:
    planning every ablation on both datasets parses each with the trainer's flags (an
    ablation skipped on both as a copy of another is parsed too, by changes_nothing)."""
    plan = campaign_plan.run_plan(["beauty", "ml-1m"], [], list(campaign_plan.ABLATIONS), ["0"])
    skipped_as_copies = {
        line.split()[1].rstrip(":")
        for line in capsys.readouterr().out.splitlines()
        if "already has" in line
    }
    planned = {name for _, name, *_ in plan}
    assert sorted(planned | skipped_as_copies) == sorted(campaign_plan.ABLATIONS)


def test_a_batch_loss_variant_is_skipped_where_the_flagfile_takes_the_batch_mean(
    tmp_path, monkeypatch, capsys
):
    """X-batch-loss is X with --loss_normalization=batch: planned where the flagfile weighs
    every target alike, skipped as X's copy where it already takes each batch's mean, and
    limited to X's own datasets."""
    flags_dir = tmp_path / "flags"
    flags_dir.mkdir()
    for dataset, loss in (("beauty", "target"), ("ml-1m", "batch")):
        for model in ("hybrid", "fmlp"):
            text = f"--model={model}\n--loss_normalization={loss}\n"
            (flags_dir / f"{dataset}_{model}.flags").write_text(text)
    monkeypatch.setattr(campaign_plan, "REPO", str(tmp_path))
    names = ["fmlp-4-layers-batch-loss", "hybrid-stride-100-batch-loss"]
    plan = campaign_plan.run_plan(["beauty", "ml-1m"], [], names, ["0"])
    batch = {"num_layers": "4", "loss_normalization": "batch"}
    assert plan == [("beauty", "fmlp-4-layers-batch-loss", "flags/beauty_fmlp.flags", batch, 0)]
    assert capsys.readouterr().out.splitlines() == [
        "beauty hybrid-stride-100-batch-loss: skipped, for ml-1m only",
        "ml-1m fmlp-4-layers-batch-loss: skipped, flags/ml-1m_fmlp.flags already has "
        "--loss_normalization=batch",
        "ml-1m hybrid-stride-100-batch-loss: skipped, flags/ml-1m_hybrid.flags already has "
        "--loss_normalization=batch",
    ]


def test_a_model_without_a_flagfile_is_refused_by_name():
    with pytest.raises(app.UsageError, match="no flagfile flags/beauty_gru.flags"):
        campaign_plan.run_plan(["beauty"], ["gru"], [], ["0"])


def test_the_capacity_matched_runs_have_about_the_default_hybrids_parameters():
    """benchmarks/parameters.py --runs counts each run as its flagfile and overrides build
    it: every capacity-matched baseline and hybrid is within 5 % of the default hybrid's
    trainable parameters on both datasets, and each other-sized baseline within 5 % of the
    hybrids matched to it."""
    names = ["hybrid", *campaign_plan.CAPACITY_MATCHED_HYBRIDS, "fmlp-4-layers", "sasrec-4-layers"]
    matched = campaign_plan.MATCHED_HYBRIDS
    others = [*matched, *(name for hybrids in matched.values() for name in hybrids)]
    result = subprocess.run(
        [sys.executable, "benchmarks/parameters.py", f"--runs={','.join(names + others)}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cells = [line.split(" | ") for line in result.stdout.splitlines()[2:]]
    total = {tuple(row[2].split()): int(row[3].replace(",", "")) for row in cells}
    assert len(total) == 2 * len(names + others)
    for dataset in ("ml-1m", "beauty"):
        for name in names[1:]:
            ratio = total[(dataset, name)] / total[(dataset, "hybrid")]
            assert 0.95 < ratio < 1.05, (dataset, name, ratio)
        for baseline, hybrids in matched.items():
            for name in hybrids:
                ratio = total[(dataset, name)] / total[(dataset, baseline)]
                assert 0.95 < ratio < 1.05, (dataset, name, baseline, ratio)
