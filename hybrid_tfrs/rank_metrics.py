"""Per-user metrics of one relevant item from its 1-based rank (numpy only, no TensorFlow).

With one relevant item the rank gives every metric exactly: HR@k = [rank <= k],
NDCG@k = [rank <= k] / log2(rank + 1), MRR = 1 / rank, MRR@10 = [rank <= 10] /
rank. ``hybrid_tfrs.evaluation.metrics_from_ranks`` averages these over users;
``hybrid_tfrs.significance`` compares them user by user.
"""

import numpy as np


def per_user_metrics(ranks, ks=(1, 5, 10, 20)):
    """HR@k, NDCG@k (k > 1), MRR and MRR@10 of each user.

    NDCG@1 equals HR@1 and is left out. The default ``ks`` give exactly
    ``hybrid_tfrs.config.METRICS``.

    Args:
      ranks: int [U], ranks >= 1 (U may be 0: empty arrays).
      ks: cut-offs, positive ints.

    Returns:
      dict metric name -> float64 [U].
    """
    ranks = np.asarray(ranks).reshape(-1)
    if ranks.size and ranks.min() < 1:
        raise ValueError(f"ranks must be >= 1, got min {ranks.min()}")
    if any(not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive ints, got {ks}")
    ranks = ranks.astype(np.float64)
    gain = 1.0 / np.log2(ranks + 1.0)
    metrics = {f"HR@{k}": (ranks <= k).astype(np.float64) for k in ks}
    metrics.update({f"NDCG@{k}": np.where(ranks <= k, gain, 0.0) for k in ks if k > 1})
    metrics["MRR"] = 1.0 / ranks
    metrics["MRR@10"] = np.where(ranks <= 10, 1.0 / ranks, 0.0)
    return metrics
