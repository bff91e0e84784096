"""Paired tests of two models on the same test users, from their per-user ranks (no TensorFlow).

A finished run keeps every test user's pessimistic target rank in
``test_ranks.npz`` (:func:`write_ranks`; ``hybrid-tfrs-evaluate --write_ranks``
makes it for older runs). Two models are compared user by user: per-user
NDCG@10 (or any metric of :func:`hybrid_tfrs.rank_metrics.per_user_metrics`)
of model A minus that of model B, for the same users in the same order.

Several seeds of a model: the per-user metric is averaged over the model's runs
first, then the paired test runs on those per-user means. The test thus asks
whether the models differ on these users, with seed noise averaged out (not
whether a new seed would reproduce the difference). For that, with two runs or
more a side, Welch's t-test compares the runs' own means (``p_seeds``): it
counts each seed once, so it is weak with few seeds, but it is the test a new
seed would have to pass.

- bootstrap: users resampled with replacement ``num_bootstrap`` times; a 95%
  percentile interval of the mean difference, and a two-sided p-value from the
  null-shifted resamples, (1 + #{|mean* - mean| >= |mean|}) / (1 + B), so
  never 0 and exactly 1 when the models agree on every user.
- Wilcoxon signed-rank (``scipy.stats.wilcoxon``, two-sided): users with equal
  values (e.g. both models miss the top 10) are dropped, the classic rule; 1.0
  when every user is equal.
- seeds (``scipy.stats.ttest_ind(equal_var=False)``, two-sided): each run's
  mean over the users, A's runs against B's; None with one run on a side, 1.0
  when the two sides' runs have equal means and no spread.

File layout of ``<split>_ranks.npz`` (compressed): ``user_ids`` str [U] (the split's user
order), ``split`` str, and one int32 [U] array of 1-based ranks per protocol,
keyed by the protocol's name (``full``, ``full-unseen``, ...).
"""

import dataclasses
import zipfile

import numpy as np

from hybrid_tfrs.rank_metrics import per_user_metrics
from hybrid_tfrs.run_dir import write_atomically

_META_KEYS = ("user_ids", "split")
# Resampled means per chunk (users x replicates held at once): about 32 MiB of int64 indices.
_BOOTSTRAP_CELLS = 2**22


@dataclasses.dataclass
class UserRanks:
    """A ranks file: ``user_ids`` str [U], ``ranks`` {protocol: int32 [U]}, ``split``, ``path``."""

    user_ids: np.ndarray
    ranks: dict
    split: str
    path: str = ""


def write_ranks(path, ranks, user_ids, split):
    """Writes ``{protocol: int [U]}`` ranks and the users' ids to ``path`` atomically.

    Args:
      path: the .npz file (written to a temporary name, then renamed over it).
      ranks: {protocol: int [U]}, ranks >= 1, users in the order of ``user_ids``.
      user_ids: [U] raw user ids (stored as str).
      split: "valid" or "test".
    """
    user_ids = np.asarray([str(u) for u in user_ids], dtype=np.str_)
    arrays = {}
    for protocol, values in ranks.items():
        values = np.asarray(values).reshape(-1)
        if protocol in _META_KEYS or values.shape != user_ids.shape:
            raise ValueError(
                f"{path}: ranks[{protocol!r}] must be [U] for the {user_ids.size} users, "
                f"got shape {values.shape}"
            )
        arrays[protocol] = values.astype(np.int32)

    def write(temporary):
        with open(temporary, "wb") as handle:  # a file object: np.savez adds no ".npz"
            np.savez_compressed(handle, user_ids=user_ids, split=np.str_(split), **arrays)

    write_atomically(path, write)


def read_ranks(path):
    """A ranks file as :class:`UserRanks`; ValueError naming the file if it is not one."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a ranks file ({error})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a ranks file (one array, not an .npz archive)")
    with npz:
        content = {key: npz[key] for key in npz.files}
    missing = [key for key in _META_KEYS if key not in content]
    if missing:
        raise ValueError(f"{path}: not a ranks file (no {', '.join(missing)})")
    user_ids = content.pop("user_ids")
    split = str(content.pop("split"))
    for protocol, values in content.items():
        if values.shape != user_ids.shape or values.size and values.min() < 1:
            raise ValueError(
                f"{path}: {protocol} must hold {user_ids.size} ranks >= 1, got shape "
                f"{values.shape}" + (f", min {values.min()}" if values.size else "")
            )
    return UserRanks(user_ids=user_ids, ranks=content, split=split, path=str(path))


def per_user_metric(ranks, metric="NDCG@10"):
    """float64 [..., U]: ``metric`` of each user from int ranks [..., U] (e.g. [runs, U])."""
    ranks = np.asarray(ranks)
    k = metric.partition("@")[2]
    ks = (1, int(k)) if k.isdigit() and int(k) > 1 else (1,)
    values = per_user_metrics(ranks.reshape(-1), ks=ks)
    if metric not in values:
        raise ValueError(f"metric must be HR@k, NDCG@k (k > 1), MRR or MRR@10, got {metric!r}")
    return values[metric].reshape(ranks.shape)


def paired_test(
    ranks_a,
    ranks_b,
    metric="NDCG@10",
    num_bootstrap=10000,
    seed=0,
    users_a=None,
    users_b=None,
):
    """Paired bootstrap and Wilcoxon signed-rank test of per-user ``metric``, A against B.

    Args:
      ranks_a: int [U] ranks of model A, or [S, U] for S runs (seeds) of it;
        the per-user metric is averaged over the runs first.
      ranks_b: int [U] or [S', U], model B on the same users in the same order.
      metric: a metric name of :func:`hybrid_tfrs.rank_metrics.per_user_metrics`.
      num_bootstrap: resamples of the users.
      seed: seeds the resampling.
      users_a, users_b: optional [U] user ids of A's and B's ranks; if given,
        they must be equal.

    Returns:
      {"metric", "users": U, "runs_a": S, "runs_b": S', "mean_a", "mean_b",
       "difference": mean_a - mean_b, "ci_low", "ci_high" (95% bootstrap
       percentile interval of the difference), "p_bootstrap", "p_wilcoxon",
       "p_seeds" (Welch's t on the runs' means; None unless S, S' >= 2),
       "num_bootstrap"}.
    """
    from scipy.stats import wilcoxon

    ranks_a, ranks_b = np.asarray(ranks_a), np.asarray(ranks_b)
    for name, ranks in (("ranks_a", ranks_a), ("ranks_b", ranks_b)):
        if ranks.ndim not in (1, 2) or ranks.shape[-1] == 0:
            raise ValueError(f"{name} must be [U] or [runs, U] with U > 0, got {ranks.shape}")
    if ranks_a.shape[-1] != ranks_b.shape[-1]:
        raise ValueError(
            f"ranks_a has {ranks_a.shape[-1]} users, ranks_b {ranks_b.shape[-1]}: "
            "a paired test needs the same users"
        )
    if users_a is not None or users_b is not None:
        check_same_users(users_a, users_b, "users_a", "users_b")
        if len(users_a) != ranks_a.shape[-1]:
            raise ValueError(f"users_a has {len(users_a)} ids, ranks_a {ranks_a.shape[-1]} users")
    if not isinstance(num_bootstrap, (int, np.integer)) or num_bootstrap < 1:
        raise ValueError(f"num_bootstrap must be a positive int, got {num_bootstrap!r}")
    runs_a = per_user_metric(ranks_a, metric).reshape(-1, ranks_a.shape[-1])  # [S, U]
    runs_b = per_user_metric(ranks_b, metric).reshape(-1, ranks_b.shape[-1])
    a, b = runs_a.mean(axis=0), runs_b.mean(axis=0)
    differences = a - b
    mean = float(differences.mean())
    resampled = _bootstrap_means(differences, num_bootstrap, seed)
    extreme = np.count_nonzero(np.abs(resampled - mean) >= abs(mean))
    if np.any(differences != 0):
        p_wilcoxon = float(wilcoxon(differences, zero_method="wilcox").pvalue)
    else:
        p_wilcoxon = 1.0
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {
        "metric": metric,
        "users": int(differences.size),
        "runs_a": len(runs_a),
        "runs_b": len(runs_b),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "difference": mean,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_bootstrap": float((1 + extreme) / (1 + num_bootstrap)),
        "p_wilcoxon": p_wilcoxon,
        "p_seeds": _welch_p(runs_a.mean(axis=1), runs_b.mean(axis=1)),
        "num_bootstrap": int(num_bootstrap),
    }


def _welch_p(means_a, means_b):
    """Two-sided p of Welch's t-test on two sets of run means [S], [S']; None if one is
    a single run, 1.0 if both sides are constant and equal (0.0 if constant and not)."""
    from scipy.stats import ttest_ind

    if len(means_a) < 2 or len(means_b) < 2:
        return None
    if np.ptp(means_a) == 0 and np.ptp(means_b) == 0:
        return 1.0 if means_a[0] == means_b[0] else 0.0
    return float(ttest_ind(means_a, means_b, equal_var=False).pvalue)


def check_same_users(users_a, users_b, name_a, name_b):
    """ValueError naming ``name_a`` and ``name_b`` unless the two [U] id arrays are equal."""
    if users_a is None or users_b is None:
        raise ValueError(f"{name_a} and {name_b}: give the user ids of both or of neither")
    users_a, users_b = np.asarray(users_a).astype(str), np.asarray(users_b).astype(str)
    if users_a.shape != users_b.shape:
        raise ValueError(
            f"{name_a} has {users_a.size} users, {name_b} {users_b.size}: "
            "a paired test needs the same users"
        )
    differ = np.flatnonzero(users_a != users_b)
    if differ.size:
        first = differ[0]
        raise ValueError(
            f"{name_a} and {name_b} list other users or another user order: {differ.size} "
            f"positions differ, first at {first} ({users_a[first]!r} vs {users_b[first]!r})"
        )


def stack_runs(runs, protocol):
    """int32 [S, U] ranks of ``protocol`` from S :class:`UserRanks` of the same users.

    ValueError naming the files if a run lacks the protocol or lists other users.
    """
    if not runs:
        raise ValueError("no runs given")
    for run in runs:
        if protocol not in run.ranks:
            raise ValueError(
                f"{run.path}: no {protocol} ranks (it has {', '.join(run.ranks) or 'none'})"
            )
        check_same_users(runs[0].user_ids, run.user_ids, runs[0].path, run.path)
    return np.stack([run.ranks[protocol] for run in runs])


def _bootstrap_means(values, num_bootstrap, seed):
    """float64 [num_bootstrap]: means of ``values`` [U] resampled with replacement."""
    rng = np.random.default_rng(seed)
    size = values.size
    per_chunk = max(1, _BOOTSTRAP_CELLS // size)
    means = np.empty(num_bootstrap)
    for start in range(0, num_bootstrap, per_chunk):
        stop = min(start + per_chunk, num_bootstrap)
        means[start:stop] = values[rng.integers(0, size, (stop - start, size))].mean(axis=1)
    return means
