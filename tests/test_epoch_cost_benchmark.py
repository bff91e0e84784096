"""benchmarks/epoch_cost.py on a tiny synthetic set: the campaign's flags, rounds, ratios."""

import subprocess
import sys

SMALL = "--override=synthetic_users=300,max_len=16,hidden_dim=8"


def _epoch_cost(repo_root, *args):
    return subprocess.run(
        [sys.executable, str(repo_root / "benchmarks" / "epoch_cost.py"), "--dataset=synthetic"]
        + list(args),
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_each_model_is_timed_with_the_campaigns_flags_round_by_round(repo_root, tmp_path):
    page = tmp_path / "cost.md"
    result = _epoch_cost(
        repo_root,
        "--models=fmlp,hybrid-shared-block",
        "--rounds=2",
        "--max_batches=2",
        SMALL,
        f"--output={page}",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [line for line in page.read_text().splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model |") and rows[0].endswith("| vs fmlp |")
    fmlp, shared = (row.split(" | ") for row in rows[1:])
    assert fmlp[0] == "| fmlp" and fmlp[1] == "`flags/synthetic_fmlp.flags`"
    flags = "`--num_layers=2 --shared_blocks=1 --gate_mode=statistics`"
    assert shared[1] == f"`flags/synthetic_hybrid.flags` {flags}"
    assert fmlp[-1] == "1.00x |"
    for row in (fmlp, shared):
        assert row[3] == "2"  # batches timed an epoch
        assert len(row[5].split(", ")) == 2 and len(row[6].split(", ")) == 2  # two rounds
    # One shared first block: fewer encoder parameters than the hybrid's two stacks, more
    # than FMLP-Rec's one.
    assert int(fmlp[2].replace(",", "")) < int(shared[2].replace(",", ""))
    assert "round 2/2 hybrid-shared-block" in result.stdout


def test_an_unknown_model_is_refused_by_name(repo_root, tmp_path):
    result = _epoch_cost(repo_root, "--models=fmlp,hybrid-tiny", f"--output={tmp_path}/x.md")
    assert result.returncode != 0
    assert "--models: unknown ['hybrid-tiny']" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.md").exists()


def test_a_malformed_override_is_refused_by_name(repo_root, tmp_path):
    result = _epoch_cost(repo_root, "--override=max_len", f"--output={tmp_path}/x.md")
    assert result.returncode != 0
    assert "--override: ['max_len'] not name=value" in result.stderr
    assert "Traceback" not in result.stderr
