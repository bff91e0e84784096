"""Paired tests on per-user ranks (hybrid_tfrs.significance): math, seeds, ranks files."""

import math
import subprocess
import sys

import numpy as np
import pytest

from hybrid_tfrs.significance import (
    paired_test,
    per_user_metric,
    read_ranks,
    stack_runs,
    write_ranks,
)


def test_per_user_ndcg_is_hand_computed_and_averages_to_metrics_from_ranks():
    ranks = [1, 2, 4, 11, 30]
    expected = [1.0, 1 / math.log2(3), 1 / math.log2(5), 0.0, 0.0]
    np.testing.assert_allclose(per_user_metric(ranks, "NDCG@10"), expected, atol=1e-15)
    np.testing.assert_array_equal(per_user_metric(ranks, "HR@5"), [1, 1, 1, 0, 0])
    np.testing.assert_allclose(per_user_metric([[1, 4]], "MRR"), [[1.0, 0.25]])  # keeps [S, U]
    with pytest.raises(ValueError, match="metric must be"):
        per_user_metric(ranks, "NDCG@1")


def test_identical_models_differ_by_zero_with_p_value_one():
    ranks = np.random.default_rng(0).integers(1, 40, size=300)
    result = paired_test(ranks, ranks.copy(), num_bootstrap=500)
    assert result["difference"] == 0.0 and result["mean_a"] == result["mean_b"]
    assert result["ci_low"] == result["ci_high"] == 0.0
    assert result["p_bootstrap"] == 1.0 and result["p_wilcoxon"] == 1.0
    assert result["users"] == 300 and result["runs_a"] == result["runs_b"] == 1


def test_a_clear_shift_gets_a_tiny_p_value_and_an_interval_around_it():
    rng = np.random.default_rng(1)
    baseline = rng.integers(5, 40, size=400)
    better = baseline - 4  # every user's target four places higher
    result = paired_test(better, baseline, num_bootstrap=2000, seed=3)
    assert result["difference"] > 0.05
    assert result["ci_low"] > 0 and result["ci_low"] < result["difference"] < result["ci_high"]
    assert result["p_bootstrap"] == 1 / 2001  # no resample as far from the mean as 0 is
    assert result["p_wilcoxon"] < 1e-10
    # A against B is B against A mirrored.
    mirrored = paired_test(baseline, better, num_bootstrap=2000, seed=3)
    assert mirrored["difference"] == -result["difference"]
    assert mirrored["p_wilcoxon"] == result["p_wilcoxon"]


def test_hand_computed_two_user_case():
    # NDCG@10 of A: [1, 0], of B: [0, 0]: differences [1, 0], mean 0.5.
    result = paired_test([1, 50], [20, 50], num_bootstrap=4000, seed=0)
    assert (result["mean_a"], result["mean_b"], result["difference"]) == (0.5, 0.0, 0.5)
    # Resampled means are 0, 0.5 or 1; |mean* - 0.5| >= 0.5 for 0 and 1: half of them.
    assert result["p_bootstrap"] == pytest.approx(0.5, abs=0.03)
    assert (result["ci_low"], result["ci_high"]) == (0.0, 1.0)


def test_seeds_are_averaged_per_user_before_the_test():
    a = np.array([[1, 3, 30], [3, 1, 30]])  # two seeds of model A
    b = np.array([1, 50, 50])
    result = paired_test(a, b, num_bootstrap=100)
    per_user_a = (per_user_metric(a[0]) + per_user_metric(a[1])) / 2
    assert result["mean_a"] == pytest.approx(per_user_a.mean())
    assert result["difference"] == pytest.approx((per_user_a - per_user_metric(b)).mean())
    assert (result["runs_a"], result["runs_b"]) == (2, 1)


def test_the_seeds_test_needs_two_runs_a_side_and_sees_what_averaging_hides():
    """Every user shows A's two-seed mean below B's (the user bootstrap's smallest p), but A's
    seeds disagree (all hits at rank 1, all at rank 50): Welch's t on the runs' means,
    computed here by hand, finds nothing."""
    from scipy.stats import t as student_t

    users = 200
    a = np.stack([np.full(users, 1), np.full(users, 50)])
    b = np.stack([np.full(users, 2), np.full(users, 3)])
    result = paired_test(a, b, num_bootstrap=999)
    assert result["p_bootstrap"] == pytest.approx(1 / 1000)
    means_a, means_b = np.array([1.0, 0.0]), 1 / np.log2([3.0, 4.0])  # each run's mean
    var_a, var_b = means_a.var(ddof=1) / 2, means_b.var(ddof=1) / 2
    statistic = (means_a.mean() - means_b.mean()) / np.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a**2 + var_b**2)  # Welch-Satterthwaite, 2 runs a side
    assert result["p_seeds"] == pytest.approx(2 * student_t.sf(abs(statistic), df))
    assert result["p_seeds"] > 0.8
    assert paired_test(a, b[0], num_bootstrap=10)["p_seeds"] is None
    assert paired_test(b, b, num_bootstrap=10)["p_seeds"] == 1.0


def test_bootstrap_depends_on_the_seed_only():
    a, b = np.arange(1, 101), np.arange(100, 0, -1)
    assert paired_test(a, b, seed=7, num_bootstrap=300) == paired_test(
        a, b, seed=7, num_bootstrap=300
    )
    assert paired_test(a, b, seed=7)["ci_low"] != paired_test(a, b, seed=8)["ci_low"]


def test_other_users_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="ranks_a has 3 users, ranks_b 2"):
        paired_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"other user order: 2 positions differ, first at 0"):
        paired_test([1, 2], [1, 2], users_a=["u1", "u2"], users_b=["u2", "u1"])
    with pytest.raises(ValueError, match="users_a has 3 users, users_b 2"):
        paired_test([1, 2], [1, 2], users_a=["u1", "u2", "u3"], users_b=["u1", "u2"])
    with pytest.raises(ValueError, match="of both or of neither"):
        paired_test([1, 2], [1, 2], users_a=["u1", "u2"])
    with pytest.raises(ValueError, match="ranks must be >= 1"):
        paired_test([0, 2], [1, 2])


def test_ranks_file_round_trip_and_stacking(tmp_path):
    users = ["u7", "u3", "u9"]
    path = tmp_path / "test_ranks.npz"
    write_ranks(path, {"full": np.array([1, 5, 2]), "full-unseen": [1, 4, 2]}, users, "test")
    assert not list(tmp_path.glob("*.tmp*"))
    run = read_ranks(path)
    assert run.user_ids.tolist() == users and run.split == "test"
    assert run.ranks["full"].dtype == np.int32 and run.ranks["full-unseen"].tolist() == [1, 4, 2]
    write_ranks(tmp_path / "b.npz", {"full": [2, 2, 2]}, users, "test")
    stacked = stack_runs([run, read_ranks(tmp_path / "b.npz")], "full")
    np.testing.assert_array_equal(stacked, [[1, 5, 2], [2, 2, 2]])
    with pytest.raises(ValueError, match=r"b\.npz: no full-unseen ranks \(it has full\)"):
        stack_runs([run, read_ranks(tmp_path / "b.npz")], "full-unseen")
    write_ranks(tmp_path / "c.npz", {"full": [1, 1, 1]}, ["u7", "u9", "u3"], "test")
    with pytest.raises(ValueError, match=r"test_ranks\.npz and .*c\.npz list other users"):
        stack_runs([run, read_ranks(tmp_path / "c.npz")], "full")


def test_bad_ranks_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="nothing.npz: no such file"):
        read_ranks(tmp_path / "nothing.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="text.npz: not a ranks file"):
        read_ranks(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", full=np.ones(3))
    with pytest.raises(ValueError, match=r"other.npz: not a ranks file \(no user_ids, split\)"):
        read_ranks(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="must be \\[U\\] for the 2 users"):
        write_ranks(tmp_path / "short.npz", {"full": [1, 2, 3]}, ["u1", "u2"], "test")


def test_the_module_imports_neither_keras_nor_tensorflow():
    code = (
        "import sys, hybrid_tfrs.significance; "
        "assert not {'keras', 'tensorflow'} & set(sys.modules), sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
