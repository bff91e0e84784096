"""benchmarks/accuracy.py end to end on tiny synthetic runs: the rows issue 5 asks for."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

CORES = sorted(os.sched_getaffinity(0))[:2]
# One epoch of a one-layer model on a tiny synthetic set: the script's plumbing, not the
# model's accuracy.
TINY = (
    "synthetic_users=200,synthetic_items=300,max_len=20,hidden_dim=16,num_layers=1,epochs=1,"
    "batch_size=64"
)


def _accuracy(repo_root, tmp_path, *args):
    return subprocess.run(
        [
            sys.executable,
            str(repo_root / "benchmarks" / "accuracy.py"),
            f"--data_dir={tmp_path}",  # synthetic data needs no files
            f"--runs_dir={tmp_path / 'runs'}",
            f"--output={tmp_path / 'accuracy'}",
            "--noplots",
            *args,
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def campaign(repo_root, tmp_path_factory):
    """The hybrid and its fixed-alpha ablation, seeds 0 and 1, one epoch each, two
    runs at a time (one a core) where the machine has two cores."""
    tmp_path = tmp_path_factory.mktemp("accuracy")
    args = ("--datasets=synthetic", "--models=hybrid", "--ablations=hybrid-fixed-alpha")
    cores = ",".join(map(str, CORES))
    result = _accuracy(
        repo_root, tmp_path, *args, "--seeds=0,1", f"--override={TINY}", f"--cores={cores}"
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    with open(tmp_path / "accuracy.json", encoding="utf-8") as handle:
        rows = json.load(handle)
    return tmp_path, rows, args


def _run_metrics(tmp_path, variant, seed):
    path = tmp_path / "runs" / "synthetic" / variant / f"seed{seed}" / "metrics.json"
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_rows_hold_the_fields_issue_5_names_for_every_variant_and_protocol(campaign):
    _, rows, _ = campaign
    required = {"dataset", "model", "protocol", "split", "seeds", "metrics", "std", "flagfile"}
    assert all(required | {"train_minutes"} <= set(row) for row in rows)
    protocols = {"full", "full-unseen", "uniform-99", "pop-100"}
    for variant in ("hybrid", "hybrid-fixed-alpha"):
        mine = [row for row in rows if row["variant"] == variant]
        assert {row["protocol"] for row in mine} == protocols
        assert all(row["model"] == "hybrid" and row["split"] == "test" for row in mine)
        assert all(row["seeds"] == [0, 1] for row in mine)
        assert all(row["flagfile"] == "flags/synthetic_hybrid.flags" for row in mine)


def test_each_metric_is_the_mean_and_sample_std_of_the_seeds_runs(campaign):
    tmp_path, rows, _ = campaign
    for row in rows:
        runs = [_run_metrics(tmp_path, row["variant"], seed) for seed in (0, 1)]
        for metric, mean in row["metrics"].items():
            values = [run["test"][row["protocol"]][metric] for run in runs]
            assert mean == pytest.approx(np.mean(values))
            assert row["std"][metric] == pytest.approx(np.std(values, ddof=1))


def test_the_ablation_trains_the_hybrid_flagfile_with_its_one_change(campaign):
    tmp_path, rows, _ = campaign
    for seed in (0, 1):
        plain = _run_metrics(tmp_path, "hybrid", seed)["config"]
        ablated = _run_metrics(tmp_path, "hybrid-fixed-alpha", seed)["config"]
        assert plain["gate_mode"] == "learned" and ablated["gate_mode"] == "fixed"
        assert {k for k in plain if plain[k] != ablated[k]} == {"gate_mode", "output_dir"}
    fixed = next(r for r in rows if r["variant"] == "hybrid-fixed-alpha")
    assert fixed["test_alpha"] == [0.5, 0.5]  # mean gate alpha of each seed's test users


def test_each_run_is_pinned_to_one_core_and_every_core_is_used(campaign):
    tmp_path = campaign[0]
    used = set()
    for log in (tmp_path / "runs" / "synthetic").glob("*/seed*/train.log"):
        header = log.read_text(encoding="utf-8").strip().splitlines()[0]
        assert header.startswith("$ [core "), header
        used.add(int(header.split("[core ")[1].split("]")[0]))
    assert used == set(CORES)


def test_collecting_without_training_gives_the_same_rows(repo_root, campaign):
    tmp_path, rows, args = campaign
    logs = {
        seed: (tmp_path / "runs" / "synthetic" / "hybrid" / f"seed{seed}" / "train.log")
        for seed in (0, 1)
    }
    sizes = {seed: log.stat().st_size for seed, log in logs.items()}
    result = _accuracy(repo_root, tmp_path, *args, "--seeds=0,1", f"--override={TINY}", "--notrain")
    assert result.returncode == 0, result.stderr[-4000:]
    with open(tmp_path / "accuracy.json", encoding="utf-8") as handle:
        assert json.load(handle) == rows
    assert {seed: log.stat().st_size for seed, log in logs.items()} == sizes
    page = (tmp_path / "accuracy.md").read_text(encoding="utf-8")
    assert "## synthetic" in page and "| hybrid-fixed-alpha | 0,1 |" in page
    assert "--gate_mode=fixed" in page  # the exact commands are on the page


@pytest.mark.parametrize("cores", ["", str(CORES[0])], ids=["unpinned", "pinned"])
def test_a_failed_run_stops_the_campaign_with_the_runs_own_error(repo_root, tmp_path, cores):
    override = "--override=epochs=1,synthetic_items=100"  # too few items for uniform-99
    models = "--models=fmlp,linrec"
    args = ("--datasets=synthetic", models, "--ablations=", override, f"--cores={cores}")
    result = _accuracy(repo_root, tmp_path, *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "run failed (exit 2): error: --protocols: uniform-99 needs 99" in result.stderr
    runs = tmp_path / "runs" / "synthetic"
    assert str(runs / "fmlp" / "seed0" / "train.log") in result.stderr
    assert not (runs / "linrec").exists()  # the next run never started


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ablations=no-such-ablation"], "--ablations: unknown ['no-such-ablation']"),
        (["--datasets=nowhere", "--models=hybrid", "--ablations="], "no flagfile"),
        (["--cores=0,0"], "--cores: 0,0 must name distinct cores among"),
        (["--cores=4096"], "--cores: 4096 must name distinct cores among"),
        (["--cores=first"], "--cores: expected integers, got first"),
    ],
)
def test_bad_arguments_give_a_one_line_usage_error(repo_root, tmp_path, args, message):
    result = _accuracy(repo_root, tmp_path, *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_ablation_its_flagfile_already_is_is_skipped_not_trained(repo_root, tmp_path):
    result = _accuracy(
        repo_root,
        tmp_path,
        "--datasets=beauty,ml-1m",
        "--models=",
        "--ablations=hybrid-latest-window",
        "--notrain",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "beauty hybrid-latest-window: skipped" in result.stdout
    assert "ml-1m hybrid-latest-window: skipped" not in result.stdout
    assert "[1/1] ml-1m hybrid-latest-window seed 0" in result.stdout


def _paired(repo_root, *args):
    return subprocess.run(
        [sys.executable, str(repo_root / "benchmarks" / "paired.py"), *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_page_tests_the_hybrid_against_each_model_user_by_user(repo_root, campaign):
    tmp_path, _, _ = campaign
    with open(tmp_path / "accuracy_paired.json", encoding="utf-8") as handle:
        paired = json.load(handle)
    assert [(r["baseline"], r["protocol"]) for r in paired] == [
        ("hybrid-fixed-alpha", "full"),
        ("hybrid-fixed-alpha", "full-unseen"),
    ]
    for row in paired:
        assert row["users"] == 200 and row["seeds"] == "0,1 / 0,1"
        assert (row["runs_a"], row["runs_b"]) == (2, 2)
        for variant, mean in (("hybrid", row["mean_a"]), ("hybrid-fixed-alpha", row["mean_b"])):
            seeds = [_run_metrics(tmp_path, variant, s)["test"][row["protocol"]] for s in (0, 1)]
            assert mean == pytest.approx(np.mean([m["NDCG@10"] for m in seeds]))
        assert row["ci_low"] <= row["difference"] <= row["ci_high"]
        assert 0 <= row["p_seeds"] <= 1  # two seeds a side: Welch's t on the runs' means
    page = (tmp_path / "accuracy.md").read_text(encoding="utf-8")
    assert "Paired test of the hybrid against each model" in page
    assert "| p (bootstrap) | p (Wilcoxon) | p (seeds, Welch) |" in page
    assert "the same 200 test users" in page and "10,000 bootstrap resamples" in page
    assert "| full | hybrid | hybrid-fixed-alpha | 200 | 0,1 / 0,1 |" in page
    # benchmarks/paired.py on the same folders prints the same numbers.
    runs = tmp_path / "runs" / "synthetic"
    folders = {
        variant: ",".join(str(runs / variant / f"seed{s}") for s in (0, 1))
        for variant in ("hybrid", "hybrid-fixed-alpha")
    }
    result = _paired(
        repo_root, f"--runs={folders['hybrid']}", f"--baseline={folders['hybrid-fixed-alpha']}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    full = paired[0]
    assert f"| full | runs | baseline | 200 | 2 / 2 | {full['mean_a']:.4f} |" in result.stdout
    assert f"{full['difference']:+.4f}" in result.stdout


def test_runs_without_rank_files_are_named_not_tested(repo_root, campaign, tmp_path):
    source, _, args = campaign
    shutil.copytree(source / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns("*.keras"))
    old = tmp_path / "runs" / "synthetic" / "hybrid-fixed-alpha" / "seed1"
    (old / "test_ranks.npz").unlink()  # as a run trained before runs kept their ranks
    result = _accuracy(repo_root, tmp_path, *args, "--seeds=0,1", f"--override={TINY}", "--notrain")
    assert result.returncode == 0, result.stderr[-4000:]
    page = (tmp_path / "accuracy.md").read_text(encoding="utf-8")
    assert "Paired test of the hybrid" not in page
    assert f"hybrid against hybrid-fixed-alpha: no paired test, {old / 'test_ranks.npz'}" in page
    result = _paired(repo_root, f"--runs={old.parent / 'seed0'}", f"--baseline={old}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (
        f"error: --baseline: {old / 'test_ranks.npz'} not found; write it with "
        f"hybrid-tfrs-evaluate --run_dir={old} --splits=test --write_ranks"
    ) in result.stderr


def test_run_records_outlive_the_run_folders(repo_root, campaign, tmp_path):
    """--records_dir keeps each run's metrics.json and test ranks; with the run folders
    gone, the same rows and paired tests come from the records, and nothing retrains."""
    from hybrid_tfrs.significance import read_ranks

    source, rows, args = campaign
    shutil.copytree(source / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns("*.keras"))
    records = tmp_path / "records"
    common = (*args, "--seeds=0,1", f"--override={TINY}", f"--records_dir={records}")
    result = _accuracy(repo_root, tmp_path, *common, "--notrain")
    assert result.returncode == 0, result.stderr[-4000:]
    kept = records / "synthetic" / "hybrid-fixed-alpha" / "seed1"
    assert sorted(os.listdir(kept)) == ["metrics.json", "test_ranks.npz"]
    original = read_ranks(
        source / "runs" / "synthetic" / "hybrid-fixed-alpha" / "seed1" / "test_ranks.npz"
    )
    copy = read_ranks(kept / "test_ranks.npz")
    assert (
        list(copy.user_ids) == list(original.user_ids)
        and copy.ranks.keys() == original.ranks.keys()
    )
    assert all(np.array_equal(copy.ranks[p], original.ranks[p]) for p in original.ranks)
    with open(tmp_path / "accuracy_paired.json", encoding="utf-8") as handle:
        paired = json.load(handle)

    shutil.rmtree(tmp_path / "runs")
    result = _accuracy(repo_root, tmp_path, *common)  # training allowed: the records are the runs
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("read from its record") == 4
    assert not (tmp_path / "runs").exists()
    with open(tmp_path / "accuracy.json", encoding="utf-8") as handle:
        assert json.load(handle) == rows
    with open(tmp_path / "accuracy_paired.json", encoding="utf-8") as handle:
        assert json.load(handle) == paired and paired


def test_a_baseline_trained_another_way_is_also_tested_against_the_hybrid_trained_so(
    repo_root, tmp_path
):
    """fmlp-target-loss against hybrid and hybrid-target-loss; a batch-mean variant only
    against the batch-mean hybrids (hybrid-batch-loss against the hybrid: the loss A/B);
    fmlp-4-layers (no hybrid-4-layers) against the hybrid and the hybrid built to match
    it (hybrid-layer-fusion-3-layers); fmlp-5-layers also against the hybrid of its size
    (hybrid-filter-trunk-4-layers); the hybrid's own ablations against the hybrid."""
    from hybrid_tfrs.significance import write_ranks

    rng = np.random.default_rng(0)
    variants = [
        "hybrid",
        "hybrid-target-loss",
        "fmlp-target-loss",
        "fmlp-4-layers",
        "hybrid-layer-fusion-3-layers",
        "fmlp-5-layers",
        "hybrid-filter-trunk-4-layers",
        "hybrid-batch-loss",
        "hybrid-fixed-alpha-batch-loss",
        "fmlp-batch-loss",
    ]
    for variant in variants:
        ranks = {"full": rng.integers(1, 50, size=30), "full-unseen": rng.integers(1, 50, size=30)}
        (tmp_path / variant).mkdir()
        write_ranks(tmp_path / variant / "test_ranks.npz", ranks, range(30), "test")
    script = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import accuracy; "
        f"runs = {{('d', v): [(0, {str(tmp_path)!r} + '/' + v)] for v in {variants!r}}}; "
        "results, notes = accuracy.paired_tests(runs); "
        "print(json.dumps(sorted({(r['name'], r['baseline']) for r in results})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == [
        ["hybrid", "fmlp-4-layers"],
        ["hybrid", "fmlp-5-layers"],
        ["hybrid", "fmlp-target-loss"],
        ["hybrid", "hybrid-batch-loss"],
        ["hybrid", "hybrid-filter-trunk-4-layers"],
        ["hybrid", "hybrid-layer-fusion-3-layers"],
        ["hybrid", "hybrid-target-loss"],
        ["hybrid-batch-loss", "fmlp-batch-loss"],
        ["hybrid-batch-loss", "hybrid-fixed-alpha-batch-loss"],
        ["hybrid-filter-trunk-4-layers", "fmlp-5-layers"],
        ["hybrid-layer-fusion-3-layers", "fmlp-4-layers"],
        ["hybrid-target-loss", "fmlp-target-loss"],
    ]


def test_a_run_trained_with_other_settings_than_the_plan_is_named_not_used(
    repo_root, campaign, tmp_path
):
    """After a flagfile changes, its old runs and records are not mixed into the tables."""
    source, _, args = campaign
    shutil.copytree(source / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns("*.keras"))
    records = tmp_path / "records"
    common = (*args, "--seeds=0,1", f"--records_dir={records}", "--notrain")
    result = _accuracy(repo_root, tmp_path, *common, f"--override={TINY}")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "not used" not in result.stdout
    changed = f"--override={TINY},dropout=0.3"

    result = _accuracy(repo_root, tmp_path, *common, changed)
    assert result.returncode == 0, result.stderr[-4000:]
    folder = tmp_path / "runs" / "synthetic" / "hybrid" / "seed0"
    assert f"not used: {folder} was trained with --dropout=0.2 (the plan: 0.3)" in result.stdout
    with open(tmp_path / "accuracy.json", encoding="utf-8") as handle:
        assert json.load(handle) == []

    shutil.rmtree(tmp_path / "runs")  # only the records are left
    result = _accuracy(repo_root, tmp_path, *common, changed)
    assert result.returncode == 0, result.stderr[-4000:]
    record = records / "synthetic" / "hybrid-fixed-alpha" / "seed1"
    assert f"not used: {record} was trained with --dropout=0.2 (the plan: 0.3)" in result.stdout
