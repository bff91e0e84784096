"""Leave-one-out next-item evaluation (docs/design.md#protocols), numpy, batched.

The model is a callable ``score_fn(histories int32 [B, L]) -> dict`` with
either

- ``"query"``: float [B, d], one query vector per history, scored against
  ``item_embeddings`` [N + 1, d] (a two-tower model; see below), or
- ``"scores"``: float [B, N + 1], a score for every item index (baselines and
  small catalogues),

and optionally ``"alpha"``: float [B], the hybrid gate at the query position.
Item index 0 is padding and never a candidate. Histories are left-aligned and
right-padded with 0.

Chunked scoring (docs/model.md#chunked-scoring-and-memory): the full-ranking
protocols never hold a [B, N] score matrix for a query model. The item table
is scored ``chunk_size`` items at a time (query [B, d] @ table[lo:hi].T) and
each chunk only adds to every user's count of candidates scoring at or above
the target, so memory is O(batch_size x chunk_size) and the ranks equal those
of the whole matrix. (The target's own score is one inner product per user; a
float32 matrix product may round another item's equal score differently by a
last bit, so exact ties are guaranteed where the products are exact, as in the
tests.) Sampled protocols score only their 1 + n candidates.

Protocols (their numbers are not comparable with each other):

- ``full``: the target ranked among all items 1..N (RecBole's full sort for
  sequential models, which LinRec and RecGRELA report on ML-1M).
- ``full-unseen``: the target ranked among the items not in the user's
  history before it (the target itself stays rankable); the full sort of the
  S3-Rec code that FMLP-Rec and BSARec report on Amazon data.
- ``uniform-99``: target + 99 negatives drawn uniformly among the user's
  unseen items (S3-Rec, FMLP-Rec).
- ``pop-100``: target + 100 negatives drawn proportional to training
  popularity among the user's unseen items (RecBole ``pop100``, LinRec).

Ties are counted pessimistically: rank = 1 + #(candidates scoring higher than
the target) + #(other candidates scoring equal to it). A constant model thus
gets the worst rank, never the best, and cannot look good by emitting ties.

Metrics come from the target's rank, not from ``keras_rs.metrics``: with one
relevant item the rank gives every metric exactly, costs O(C) comparisons per
user instead of a sort, and makes the tie rule explicit (keras-rs breaks ties
by a random shuffle). The tests cross-check against keras-rs on tie-free
scores.
"""

import keras
import numpy as np

from hybrid_tfrs.config import METRICS, NUM_NEGATIVES, PROTOCOLS  # noqa: F401  (METRICS re-exported)
from hybrid_tfrs.negatives import (
    flatten_user_items,
    popularity_from_flat,
    uniform_from_flat,
)
from hybrid_tfrs.rank_metrics import per_user_metrics

# Scores per chunk by default (64 MiB of float32): chunk_size = this // batch_size.
SCORES_PER_CHUNK = 2**24


def rank_of_target(scores, target_col, valid=None):
    """1-based pessimistic rank of the target among the candidates.

    Args:
      scores: float [B, C], candidate scores.
      target_col: int [B], the target's column in ``scores``.
      valid: optional bool [B, C]; False columns are not candidates. The
        target's column always counts as a candidate.

    Returns:
      int64 [B], 1 + #(higher) + #(other equal) among the candidates.
    """
    scores = np.asarray(scores)
    target_col = np.asarray(target_col).reshape(-1)
    if scores.ndim != 2 or target_col.shape[0] != scores.shape[0]:
        raise ValueError(
            f"scores must be [B, C] and target_col [B], got {scores.shape} and {target_col.shape}"
        )
    if target_col.size and (target_col.min() < 0 or target_col.max() >= scores.shape[1]):
        raise ValueError(f"target_col must lie in 0..{scores.shape[1] - 1}")
    rows = np.arange(scores.shape[0])
    if valid is None:
        valid = np.ones(scores.shape, dtype=bool)
    else:
        valid = np.array(valid, dtype=bool)
        if valid.shape != scores.shape:
            raise ValueError(
                f"valid must have the shape of scores {scores.shape}, got {valid.shape}"
            )
        valid[rows, target_col] = True
    nan = np.isnan(scores) & valid
    if nan.any():
        bad = np.flatnonzero(nan.any(axis=1))
        raise ValueError(
            f"scores contain NaN in {bad.size} of {scores.shape[0]} rows "
            f"(first at row {bad[0]}); cannot rank"
        )
    target = scores[rows, target_col][:, None]
    at_or_above = np.count_nonzero(valid & (scores >= target), axis=1)
    return at_or_above.astype(np.int64)  # includes the target itself: 1 + higher + other equal


def metrics_from_ranks(ranks, ks=(1, 5, 10, 20)):
    """Mean HR@k, NDCG@k (k > 1), MRR and MRR@10 from 1-based ranks.

    With one relevant item: HR@k = [rank <= k], NDCG@k = [rank <= k] /
    log2(rank + 1), MRR = 1 / rank, MRR@10 = [rank <= 10] / rank. NDCG@1
    equals HR@1 and is left out. The default ``ks`` give exactly ``METRICS``.

    Args:
      ranks: int [U], ranks >= 1.
      ks: cut-offs, positive ints.

    Returns:
      dict metric name -> float.
    """
    return {name: float(np.mean(values)) for name, values in per_user_metrics(ranks, ks).items()}


def evaluate(
    score_fn,
    histories,
    targets,
    user_items,
    num_items,
    item_popularity=None,
    protocols=PROTOCOLS,
    seed=0,
    batch_size=256,
    seen_items=None,
    length_buckets=(5, 10, 20, 50, 100, 200),
    history_lengths=None,
    progress=True,
    item_embeddings=None,
    chunk_size=None,
    return_ranks=False,
):
    """Ranks every user's target under each protocol and averages the metrics.

    Args:
      score_fn: histories int32 [B, L] -> {"query": [B, d]} or
        {"scores": [B, N + 1]}, plus "alpha": [B] optionally.
      histories: int [U, L], left-aligned, 0-padded model inputs.
      targets: int [U], the held-out item of each user, in 1..N.
      user_items: U sequences, all items of each user (targets included);
        sampled negatives avoid them (and the target, in any case).
      num_items: N.
      item_popularity: float [N + 1] training counts; needed for ``pop-100``.
      protocols: names from ``PROTOCOLS``.
      seed: seeds the sampled negatives (drawn once, before batching, so they
        do not depend on ``batch_size``).
      batch_size: users per ``score_fn`` call.
      seen_items: U sequences, the items ``full-unseen`` drops from each
        user's candidates (never the target). Default: the items of each
        ``histories`` row; pass the untruncated histories when users are
        longer than L. Sampled protocols avoid all of ``user_items`` anyway.
      length_buckets: increasing upper edges; buckets 1-e0, e0+1-e1, ...,
        (last+1)+. Empty buckets are omitted.
      history_lengths: int [U] used for bucketing; by default the number of
        non-zero entries of each history row, i.e. the length after
        truncation to L (pass the true lengths to bucket long users apart).
      progress: show a ``keras.utils.Progbar``.
      item_embeddings: float [N + 1, d], the item table a "query" score_fn is
        scored against (row 0 is padding).
      chunk_size: items scored at a time; default ``SCORES_PER_CHUNK //
        batch_size`` (one chunk for catalogues up to 65,536 items at the
        default batch size).

    Returns:
      {"protocols": {protocol: {metric: float}},
       "buckets": [{"bucket": "1-5", "users": n, "metrics": {protocol: {...}},
                    "alpha": float or None}, ...],
       "alpha": mean gate over all users or None,
       "users": U}
    """
    histories = _check_histories(histories, num_items)
    if history_lengths is None:
        history_lengths = np.count_nonzero(histories, axis=1)
    history_lengths = _check_vector(history_lengths, "history_lengths", histories.shape[0])
    bucket_ids, bucket_labels = _bucketize(history_lengths, length_buckets)
    ranks, alpha = target_ranks(
        score_fn,
        histories,
        targets,
        user_items,
        num_items,
        item_popularity,
        protocols=protocols,
        seed=seed,
        batch_size=batch_size,
        seen_items=seen_items,
        progress=progress,
        item_embeddings=item_embeddings,
        chunk_size=chunk_size,
    )
    has_alpha = alpha is not None
    buckets = []
    for bucket, label in enumerate(bucket_labels):
        members = bucket_ids == bucket
        if not members.any():
            continue
        buckets.append(
            {
                "bucket": label,
                "users": int(members.sum()),
                "metrics": {p: metrics_from_ranks(ranks[p][members]) for p in protocols},
                "alpha": float(alpha[members].mean()) if has_alpha else None,
            }
        )
    result = {
        "protocols": {p: metrics_from_ranks(ranks[p]) for p in protocols},
        "buckets": buckets,
        "alpha": float(alpha.mean()) if has_alpha else None,
        "users": histories.shape[0],
    }
    if return_ranks:
        result["ranks"] = ranks
    return result


def target_ranks(
    score_fn,
    histories,
    targets,
    user_items,
    num_items,
    item_popularity=None,
    protocols=PROTOCOLS,
    seed=0,
    batch_size=256,
    seen_items=None,
    progress=False,
    item_embeddings=None,
    chunk_size=None,
):
    """Every user's pessimistic target rank under each protocol.

    Arguments as :func:`evaluate`.

    Returns:
      ({protocol: int64 [U] ranks >= 1}, alpha float64 [U] or None).
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise ValueError(f"unknown protocol(s) {unknown}; valid protocols are {list(PROTOCOLS)}")
    histories = _check_histories(histories, num_items)
    num_users = histories.shape[0]
    targets = _check_vector(targets, "targets", num_users).astype(np.int64)
    if targets.size and (targets.min() < 1 or targets.max() > num_items):
        raise ValueError(f"targets must lie in 1..{num_items}")
    if len(user_items) != num_users:
        raise ValueError(f"user_items has {len(user_items)} users, histories has {num_users}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if chunk_size is None:
        chunk_size = max(1, SCORES_PER_CHUNK // batch_size)
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if item_embeddings is not None:
        item_embeddings = np.asarray(item_embeddings)
        if item_embeddings.ndim != 2 or item_embeddings.shape[0] != num_items + 1:
            raise ValueError(
                f"item_embeddings must have shape ({num_items + 1}, d) [num_items + 1, d], "
                f"got {item_embeddings.shape}"
            )

    candidates = _sample_candidates(
        protocols, user_items, targets, num_items, item_popularity, seed
    )
    if "full-unseen" in protocols:
        if seen_items is None:
            seen_items = [row[row > 0] for row in histories]
        if len(seen_items) != num_users:
            raise ValueError(f"seen_items has {len(seen_items)} users, histories has {num_users}")
        candidates["full-unseen"] = flatten_user_items(seen_items, num_items)
    ranks = {p: np.empty(num_users, dtype=np.int64) for p in protocols}
    alpha = np.empty(num_users, dtype=np.float64)
    has_alpha = None
    progbar = keras.utils.Progbar(num_users, unit_name="user") if progress else None
    for start in range(0, num_users, batch_size):
        stop = min(start + batch_size, num_users)
        output = score_fn(histories[start:stop].astype(np.int32))
        scorer = _BatchScorer(output, stop - start, num_items, item_embeddings)
        batch_alpha = output.get("alpha")
        if has_alpha is None:
            has_alpha = batch_alpha is not None
        if has_alpha != (batch_alpha is not None):
            raise ValueError("score_fn returned 'alpha' for some batches but not others")
        if has_alpha:
            alpha[start:stop] = _check_vector(batch_alpha, "score_fn 'alpha'", stop - start)
        batch_targets = targets[start:stop]
        full = [p for p in protocols if p in ("full", "full-unseen")]
        if full:
            seen = (
                _batch_pairs(*candidates["full-unseen"], start, stop)
                if "full-unseen" in full
                else None
            )
            batch_ranks = _full_ranks(scorer, batch_targets, seen, num_items, chunk_size)
            for protocol in full:
                ranks[protocol][start:stop] = batch_ranks[protocol]
        for protocol in protocols:
            if protocol in NUM_NEGATIVES:
                ranks[protocol][start:stop] = rank_of_target(
                    scorer.candidate_scores(candidates[protocol][start:stop]),
                    np.zeros_like(batch_targets),
                )
        if progbar is not None:
            progbar.update(stop)
    return ranks, (alpha if has_alpha else None)


class _BatchScorer:
    """Scores of one batch's items from a ``score_fn`` output, a chunk at a time."""

    def __init__(self, output, batch, num_items, item_embeddings):
        if ("scores" in output) == ("query" in output):
            raise ValueError("score_fn must return exactly one of 'scores' and 'query'")
        if "scores" in output:
            self.scores = np.asarray(output["scores"])
            if self.scores.shape != (batch, num_items + 1):
                raise ValueError(
                    f"score_fn 'scores' must have shape {(batch, num_items + 1)} "
                    f"[batch, num_items + 1], got {self.scores.shape}"
                )
            return
        if item_embeddings is None:
            raise ValueError("score_fn returned 'query' but item_embeddings is None")
        self.scores = None
        self.query = np.asarray(output["query"], dtype=item_embeddings.dtype)
        self.table = item_embeddings
        if self.query.shape != (batch, item_embeddings.shape[1]):
            raise ValueError(
                f"score_fn 'query' must have shape {(batch, item_embeddings.shape[1])} "
                f"[batch, d of item_embeddings], got {self.query.shape}"
            )

    def chunk(self, lo, hi):
        """float [B, hi - lo], the scores of items lo..hi-1."""
        if self.scores is not None:
            return self.scores[:, lo:hi]
        return self.query @ self.table[lo:hi].T

    def candidate_scores(self, items):
        """int [B, C] items -> float [B, C] their scores."""
        if self.scores is not None:
            return np.take_along_axis(self.scores, items, axis=1)
        return np.einsum("bd,bcd->bc", self.query, self.table[items])


def _batch_pairs(flat, offsets, start, stop):
    """(rows int [P], items int [P]): users start..stop-1's flattened items, rows 0-based."""
    rows = np.repeat(np.arange(stop - start), np.diff(offsets[start : stop + 1]))
    return rows, flat[offsets[start] : offsets[stop]]


def _full_ranks(scorer, targets, seen, num_items, chunk_size):
    """Full-ranking ranks of one batch, items scored ``chunk_size`` at a time.

    rank = 1 + #(other items 1..N scoring >= the target); for ``full-unseen``
    the ``seen`` (rows, items) pairs are not counted (the target always is).

    Returns:
      {"full": int64 [B], "full-unseen": int64 [B] if seen is given}.
    """
    rows = np.arange(targets.shape[0])
    target_scores = scorer.candidate_scores(targets[:, None])  # [B, 1]
    if seen is not None:  # a repeated item of a user counts once
        pairs = np.unique(seen[0] * (num_items + 1) + seen[1])
        seen_rows, seen_items = pairs // (num_items + 1), pairs % (num_items + 1)
    above = np.zeros(targets.shape[0], dtype=np.int64)
    seen_above = np.zeros(targets.shape[0], dtype=np.int64)
    for lo in range(1, num_items + 1, chunk_size):
        hi = min(lo + chunk_size, num_items + 1)
        scores = scorer.chunk(lo, hi)
        nan = np.isnan(scores)
        if nan.any():
            bad = np.flatnonzero(nan.any(axis=1))
            raise ValueError(
                f"scores contain NaN in {bad.size} of {scores.shape[0]} rows "
                f"(first at row {bad[0]}); cannot rank"
            )
        at_or_above = scores >= target_scores
        here = (targets >= lo) & (targets < hi)
        at_or_above[rows[here], targets[here] - lo] = False  # the target is the 1 in 1 + ...
        above += np.count_nonzero(at_or_above, axis=1)
        if seen is not None:
            here = (seen_items >= lo) & (seen_items < hi)
            counted = at_or_above[seen_rows[here], seen_items[here] - lo]
            seen_above += np.bincount(seen_rows[here][counted], minlength=len(rows))
    ranks = {"full": 1 + above}
    if seen is not None:
        ranks["full-unseen"] = 1 + above - seen_above
    return ranks


def format_table(protocol_metrics):
    """Plain-text table: one row per protocol, one column per metric, 4 decimals."""
    names = list(dict.fromkeys(m for metrics in protocol_metrics.values() for m in metrics))
    first = max([len("protocol")] + [len(p) for p in protocol_metrics])
    widths = [max(len(m), 6) for m in names]
    lines = ["  ".join(["protocol".ljust(first)] + [m.rjust(w) for m, w in zip(names, widths)])]
    for protocol, metrics in protocol_metrics.items():
        cells = [f"{metrics[m]:.4f}" if m in metrics else "-" for m in names]
        lines.append(
            "  ".join([protocol.ljust(first)] + [c.rjust(w) for c, w in zip(cells, widths)])
        )
    return "\n".join(lines)


def _sample_candidates(protocols, user_items, targets, num_items, item_popularity, seed):
    """{sampled protocol: int32 [U, 1 + n] candidate items, target in column 0}."""
    sampled = [p for p in protocols if p in NUM_NEGATIVES]
    if not sampled:
        return {}
    flat, offsets = flatten_user_items(user_items, num_items, extra=targets)
    candidates = {}
    for protocol in sampled:
        n = NUM_NEGATIVES[protocol]
        if protocol == "uniform-99":
            negatives = uniform_from_flat(flat, offsets, num_items, n, seed)
        else:
            if item_popularity is None:
                raise ValueError("item_popularity is required for the pop-100 protocol")
            popularity = np.asarray(item_popularity, dtype=np.float64)
            if popularity.shape != (num_items + 1,):
                raise ValueError(
                    f"item_popularity must have shape {(num_items + 1,)} [num_items + 1], "
                    f"got {popularity.shape}"
                )
            negatives = popularity_from_flat(flat, offsets, popularity, n, seed)
        candidates[protocol] = np.concatenate(
            [targets[:, None].astype(np.int32), negatives], axis=1
        )
    return candidates


def _bucketize(lengths, edges):
    """Bucket index per user and bucket labels ("0", "1-5", ..., "201+")."""
    edges = [int(e) for e in edges]
    if not edges or edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"length_buckets must be increasing positive ints, got {edges}")
    lows = [1] + [e + 1 for e in edges]
    labels = ["0"] + [f"{lo}-{hi}" for lo, hi in zip(lows, edges)] + [f"{lows[-1]}+"]
    # lengths 0 -> 0, 1..e0 -> 1, e0+1..e1 -> 2, ..., > last -> len(edges) + 1
    ids = np.where(lengths < 1, 0, np.searchsorted(edges, lengths, side="left") + 1)
    return ids, labels


def _check_histories(histories, num_items):
    histories = np.asarray(histories)
    if histories.ndim != 2:
        raise ValueError(f"histories must be [U, L], got shape {histories.shape}")
    if histories.size and (histories.min() < 0 or histories.max() > num_items):
        raise ValueError(f"histories must hold item indices in 0..{num_items}")
    return histories


def _check_vector(values, name, size):
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {values.shape}")
    return values
