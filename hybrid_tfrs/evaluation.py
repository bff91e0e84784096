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

Streaming (:func:`evaluate_batches`): users may come a batch at a time, e.g.
read from prepared shards by tf.data
(``hybrid_tfrs.data.prepared_pipeline.streamed_eval_dataset``). Each batch is
ranked and added to exact metric sums, so nothing per user is kept and the
metrics do not depend on the batching; sampled negatives come from one random
stream per user number, so they are those of an in-memory evaluation of the
same users in the same order.

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

import math

import keras
import numpy as np

from hybrid_tfrs.config import METRICS, NUM_NEGATIVES, PROTOCOLS  # noqa: F401  (METRICS re-exported)
from hybrid_tfrs.negatives import (
    check_item_range,
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


def metric_values(ranks, ks=(1, 5, 10, 20)):
    """Every user's metrics from its 1-based rank: dict name -> float64 [U] (U may be 0).

    The formulas live in :func:`hybrid_tfrs.rank_metrics.per_user_metrics`
    (TF-free, shared with :mod:`hybrid_tfrs.significance`).
    """
    return per_user_metrics(ranks, ks)


def metrics_from_ranks(ranks, ks=(1, 5, 10, 20)):
    """Means of :func:`metric_values` over the users: dict metric name -> float."""
    sums = MetricSums(ks)
    sums.add(ranks)
    return sums.means()


class MetricSums:
    """Sums of :func:`metric_values`, added a batch of users at a time.

    The sums are exact (each kept as a few floats whose exact sum it is, and
    rounded once by ``math.fsum``), so the means do not depend on how the
    users were batched.
    """

    def __init__(self, ks=(1, 5, 10, 20)):
        self.ks = ks
        self.users = 0
        self.terms = {}  # metric -> floats whose exact sum is the metric's sum

    def add(self, ranks):
        """Adds the users of ``ranks``, int [B] (B may be 0)."""
        for name, values in metric_values(ranks, self.ks).items():
            self.terms[name] = _exact_terms(self.terms.get(name, []), values)
        self.users += np.size(ranks)

    def means(self):
        """dict metric name -> mean over the users added."""
        if not self.users:
            raise ValueError("ranks is empty")
        return {name: math.fsum(terms) / self.users for name, terms in self.terms.items()}


def _exact_terms(terms, values):
    """A few floats whose exact sum is that of ``terms`` and ``values`` (float [n])."""
    rest = [*terms, *np.asarray(values, dtype=np.float64).tolist()]
    exact = []
    while True:  # each round keeps the correctly rounded remainder: about 53 more bits
        total = math.fsum(rest)
        if total == 0.0:  # fsum is correctly rounded: 0 only for an exact 0
            return exact
        exact.append(total)
        rest.append(-total)


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

    In-memory users; :func:`evaluate_batches` (which this calls) takes users
    that come a batch at a time.

    Args:
      score_fn: histories int32 [B, L] -> {"query": [B, d]} or
        {"scores": [B, N + 1]}, plus "alpha": [B] optionally; with "query",
        "seen_bias" (a float) optionally: the model's learned offset, added to
        the score of every item in the row of ``histories`` it scored.
      histories: int [U, L], left-aligned, 0-padded model inputs.
      targets: int [U], the held-out item of each user, in 1..N.
      user_items: U sequences, all items of each user (targets included);
        sampled negatives avoid them (and the target, in any case).
      num_items: N.
      item_popularity: float [N + 1] training counts; needed for ``pop-100``.
      protocols: names from ``PROTOCOLS``.
      seed: seeds the sampled negatives (one random stream per user, so they
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
      return_ranks: also return every user's ranks (for paired tests).

    Returns:
      {"protocols": {protocol: {metric: float}},
       "buckets": [{"bucket": "1-5", "users": n, "metrics": {protocol: {...}},
                    "alpha": float or None}, ...],
       "alpha": mean gate over all users or None,
       "users": U,
       "ranks": {protocol: int64 [U]} with ``return_ranks``}
    """
    batches = _array_batches(
        histories, targets, user_items, num_items, batch_size, seen_items, history_lengths
    )
    return evaluate_batches(
        score_fn,
        batches,
        num_items,
        item_popularity,
        protocols=protocols,
        seed=seed,
        batch_size=batch_size,
        length_buckets=length_buckets,
        progress=progress,
        num_users=len(targets),
        item_embeddings=item_embeddings,
        chunk_size=chunk_size,
        return_ranks=return_ranks,
    )


def evaluate_batches(
    score_fn,
    batches,
    num_items,
    item_popularity=None,
    protocols=PROTOCOLS,
    seed=0,
    batch_size=256,
    length_buckets=(5, 10, 20, 50, 100, 200),
    progress=False,
    num_users=None,
    item_embeddings=None,
    chunk_size=None,
    return_ranks=False,
):
    """:func:`evaluate` on users that come a batch at a time (e.g. streamed from shards).

    Each batch is scored, ranked and added to the metric sums, then dropped:
    memory is O(B x L + B x chunk_size) plus one batch's item lists. Users
    are numbered in the order they come (the number seeds their sampled
    negatives), so the same users in the same order give the same results,
    however they are batched.

    Args:
      batches: iterable of dicts of numpy arrays, B users each:
        ``histories`` int [B, L], left-aligned, 0-padded model inputs;
        ``targets`` int [B], in 1..N; ``lengths`` int [B], the history
        lengths the buckets use; ``items`` int [P] and ``item_offsets``
        int [B + 1]: user b's items are ``items[item_offsets[b]:
        item_offsets[b + 1]]``, which its sampled negatives avoid (as they
        avoid its target); ``seen`` int [S] and ``seen_offsets`` int [B + 1]:
        likewise the items ``full-unseen`` drops.
      batch_size: the batches' size (the last may be smaller); sets the
        default ``chunk_size``.
      num_users: U, for the progress bar, if known.
      Other arguments: as :func:`evaluate`.

    Returns:
      As :func:`evaluate`.
    """
    ranker = _Ranker(
        score_fn,
        num_items,
        item_popularity,
        protocols,
        seed,
        batch_size,
        item_embeddings,
        chunk_size,
    )
    _, labels = _bucketize(np.zeros(0, dtype=np.int64), length_buckets)
    overall = _Totals(ranker.protocols)
    buckets = [_Totals(ranker.protocols) for _ in labels]
    progbar = keras.utils.Progbar(num_users, unit_name="user") if progress else None
    kept = _KeptRanks(ranker.protocols) if return_ranks else None
    for batch, ranks, alpha in ranker.ranked(batches):
        if kept is not None:
            kept.add(ranks, alpha)
        size = len(batch["targets"])
        lengths = _check_vector(batch["lengths"], "lengths", size)
        bucket_ids, _ = _bucketize(lengths, length_buckets)
        overall.add(ranks, alpha)
        for bucket in np.unique(bucket_ids):
            members = bucket_ids == bucket
            buckets[bucket].add(
                {p: r[members] for p, r in ranks.items()},
                None if alpha is None else alpha[members],
            )
        if progbar is not None:
            progbar.update(overall.users)
    result = {
        "protocols": overall.metrics(),
        "buckets": [
            {
                "bucket": label,
                "users": totals.users,
                "metrics": totals.metrics(),
                "alpha": totals.alpha(ranker.has_alpha),
            }
            for label, totals in zip(labels, buckets)
            if totals.users
        ],
        "alpha": overall.alpha(ranker.has_alpha),
        "users": overall.users,
    }
    if kept is not None:
        result["ranks"] = kept.ranks()
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
    item_embeddings=None,
    chunk_size=None,
):
    """Every user's pessimistic target rank under each protocol.

    Arguments as :func:`evaluate`.

    Returns:
      ({protocol: int64 [U] ranks >= 1}, alpha float64 [U] or None).
    """
    batches = _array_batches(histories, targets, user_items, num_items, batch_size, seen_items)
    ranker = _Ranker(
        score_fn,
        num_items,
        item_popularity,
        protocols,
        seed,
        batch_size,
        item_embeddings,
        chunk_size,
    )
    kept = _KeptRanks(ranker.protocols)
    for _, ranks, alpha in ranker.ranked(batches):
        kept.add(ranks, alpha)
    return kept.ranks(), (kept.alpha() if ranker.has_alpha else None)


def _array_batches(
    histories, targets, user_items, num_items, batch_size, seen_items=None, history_lengths=None
):
    """Checks in-memory users (see :func:`evaluate`); a generator of their batches."""
    histories = _check_histories(histories, num_items)
    num_users = histories.shape[0]
    targets = _check_vector(targets, "targets", num_users)
    if len(user_items) != num_users:
        raise ValueError(f"user_items has {len(user_items)} users, histories has {num_users}")
    if seen_items is None:
        seen_items = [row[row > 0] for row in histories]
    if len(seen_items) != num_users:
        raise ValueError(f"seen_items has {len(seen_items)} users, histories has {num_users}")
    if history_lengths is None:
        history_lengths = np.count_nonzero(histories, axis=1)
    history_lengths = _check_vector(history_lengths, "history_lengths", num_users)
    _check_positive(batch_size, "batch_size")
    items, item_offsets = flatten_user_items(user_items, num_items)
    seen, seen_offsets = flatten_user_items(seen_items, num_items)

    def batches():
        for start in range(0, num_users, batch_size):
            stop = min(start + batch_size, num_users)
            yield {
                "histories": histories[start:stop],
                "targets": targets[start:stop],
                "lengths": history_lengths[start:stop],
                "items": items[item_offsets[start] : item_offsets[stop]],
                "item_offsets": item_offsets[start : stop + 1] - item_offsets[start],
                "seen": seen[seen_offsets[start] : seen_offsets[stop]],
                "seen_offsets": seen_offsets[start : stop + 1] - seen_offsets[start],
            }

    return batches()


class _Ranker:
    """The ranks of one batch of users at a time under the checked settings."""

    def __init__(
        self,
        score_fn,
        num_items,
        item_popularity,
        protocols,
        seed,
        batch_size,
        item_embeddings,
        chunk_size,
    ):
        self.protocols = tuple(protocols)
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise ValueError(
                f"unknown protocol(s) {unknown}; valid protocols are {list(PROTOCOLS)}"
            )
        _check_positive(batch_size, "batch_size")
        if chunk_size is None:
            chunk_size = max(1, SCORES_PER_CHUNK // batch_size)
        _check_positive(chunk_size, "chunk_size")
        if item_embeddings is not None:
            item_embeddings = np.asarray(item_embeddings)
            if item_embeddings.ndim != 2 or item_embeddings.shape[0] != num_items + 1:
                raise ValueError(
                    f"item_embeddings must have shape ({num_items + 1}, d) [num_items + 1, d], "
                    f"got {item_embeddings.shape}"
                )
        popularity = None
        if "pop-100" in self.protocols:
            if item_popularity is None:
                raise ValueError("item_popularity is required for the pop-100 protocol")
            popularity = np.asarray(item_popularity, dtype=np.float64)
            if popularity.shape != (num_items + 1,):
                raise ValueError(
                    f"item_popularity must have shape {(num_items + 1,)} [num_items + 1], "
                    f"got {popularity.shape}"
                )
        self.score_fn = score_fn
        self.num_items = num_items
        self.popularity = popularity
        self.seed = seed
        self.item_embeddings = item_embeddings
        self.chunk_size = chunk_size
        self.has_alpha = None  # set by the first batch

    def ranked(self, batches):
        """``(batch, {protocol: int64 [B]}, alpha [B] or None)`` for each batch, users
        numbered in the order they come."""
        users = 0
        for batch in batches:
            ranks, alpha = self.ranks(batch, users)
            yield batch, ranks, alpha
            users += len(batch["targets"])

    def ranks(self, batch, first_user):
        """({protocol: int64 [B]}, alpha float [B] or None) of a batch (see evaluate_batches).

        ``first_user``: the number of the batch's first user (seeds its negatives).
        """
        histories = _check_histories(batch["histories"], self.num_items)
        size = histories.shape[0]
        targets = _check_vector(batch["targets"], "targets", size).astype(np.int64)
        if targets.size and (targets.min() < 1 or targets.max() > self.num_items):
            raise ValueError(f"targets must lie in 1..{self.num_items}")
        output = self.score_fn(histories.astype(np.int32))
        scorer = _BatchScorer(output, histories, self.num_items, self.item_embeddings)
        alpha = output.get("alpha")
        if self.has_alpha is None:
            self.has_alpha = alpha is not None
        if self.has_alpha != (alpha is not None):
            raise ValueError("score_fn returned 'alpha' for some batches but not others")
        if alpha is not None:
            alpha = _check_vector(alpha, "score_fn 'alpha'", size)
        ranks = {}
        if "full" in self.protocols or "full-unseen" in self.protocols:
            seen = None
            if "full-unseen" in self.protocols:
                check_item_range(batch["seen"], self.num_items, "seen items")
                seen = _batch_pairs(batch["seen"], batch["seen_offsets"])
            ranks.update(_full_ranks(scorer, targets, seen, self.num_items, self.chunk_size))
        for protocol in self.protocols:
            if protocol in NUM_NEGATIVES:
                candidates = self._candidates(protocol, batch, targets, first_user)
                ranks[protocol] = rank_of_target(
                    scorer.candidate_scores(candidates), np.zeros_like(targets)
                )
        return {p: ranks[p] for p in self.protocols}, alpha

    def _candidates(self, protocol, batch, targets, first_user):
        """int32 [B, 1 + n]: the target, then the negatives of a sampled protocol."""
        check_item_range(batch["items"], self.num_items, "user_items")
        offsets = np.asarray(batch["item_offsets"], dtype=np.int64)
        # The target joins each user's items: never a negative, even if they omit it.
        items = np.insert(np.asarray(batch["items"], dtype=np.int64), offsets[1:], targets)
        offsets = offsets + np.arange(len(offsets))
        n = NUM_NEGATIVES[protocol]
        if protocol == "uniform-99":
            negatives = uniform_from_flat(items, offsets, self.num_items, n, self.seed, first_user)
        else:
            negatives = popularity_from_flat(
                items, offsets, self.popularity, n, self.seed, first_user
            )
        return np.concatenate([targets[:, None].astype(np.int32), negatives], axis=1)


class _KeptRanks:
    """Every user's ranks (and gate alpha), kept batch by batch."""

    def __init__(self, protocols):
        self.parts = {p: [] for p in protocols}
        self.alphas = []

    def add(self, ranks, alpha):
        """ranks: {protocol: int [B]}; alpha: float [B] or None."""
        for protocol, values in ranks.items():
            self.parts[protocol].append(values)
        if alpha is not None:
            self.alphas.append(alpha)

    def ranks(self):
        """{protocol: int64 [U]}."""
        return {p: np.concatenate(r) if r else np.zeros(0, np.int64) for p, r in self.parts.items()}

    def alpha(self):
        """float64 [U]."""
        return np.concatenate(self.alphas).astype(np.float64) if self.alphas else np.zeros(0)


class _Totals:
    """The metric sums of every protocol and the gate's sum over a group of users."""

    def __init__(self, protocols):
        self.sums = {p: MetricSums() for p in protocols}
        self.alpha_terms = []
        self.users = 0

    def add(self, ranks, alpha):
        """ranks: {protocol: int [B]}; alpha: float [B] or None."""
        for protocol, sums in self.sums.items():
            sums.add(ranks[protocol])
        if alpha is not None:
            self.alpha_terms = _exact_terms(self.alpha_terms, alpha)
        self.users += len(next(iter(ranks.values())))

    def metrics(self):
        return {p: sums.means() for p, sums in self.sums.items()}

    def alpha(self, has_alpha):
        return math.fsum(self.alpha_terms) / self.users if has_alpha else None


class _BatchScorer:
    """Scores of one batch's items from a ``score_fn`` output, a chunk at a time."""

    def __init__(self, output, histories, num_items, item_embeddings):
        batch = histories.shape[0]
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
        self.seen_bias = output.get("seen_bias")
        if self.seen_bias is not None:
            # Each row's distinct items, as (row, item) pairs and as a [B, L] lookup.
            self.histories = histories
            rows, columns = np.nonzero(histories)
            self.seen_rows, self.seen_items = _distinct_pairs(
                rows, histories[rows, columns], num_items
            )

    def chunk(self, lo, hi):
        """float [B, hi - lo], the scores of items lo..hi-1."""
        if self.scores is not None:
            return self.scores[:, lo:hi]
        scores = self.query @ self.table[lo:hi].T
        if self.seen_bias is not None:
            here = (self.seen_items >= lo) & (self.seen_items < hi)
            scores[self.seen_rows[here], self.seen_items[here] - lo] += self.seen_bias
        return scores

    def candidate_scores(self, items):
        """int [B, C] items -> float [B, C] their scores."""
        if self.scores is not None:
            return np.take_along_axis(self.scores, items, axis=1)
        scores = np.einsum("bd,bcd->bc", self.query, self.table[items])
        if self.seen_bias is not None:
            seen = (items[:, :, None] == self.histories[:, None, :]).any(axis=2)
            scores = scores + self.seen_bias * seen
        return scores


def _distinct_pairs(rows, items, num_items):
    """(rows, items) int [P] pairs with each (row, item) kept once, sorted."""
    pairs = np.unique(np.asarray(rows, np.int64) * (num_items + 1) + items)
    return pairs // (num_items + 1), pairs % (num_items + 1)


def _batch_pairs(flat, offsets):
    """(rows int [P], items int [P]) of flattened items, int [P] and offsets int [B + 1]."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets)), np.asarray(flat)


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
        seen_rows, seen_items = _distinct_pairs(*seen, num_items)
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


def _check_positive(value, name):
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_vector(values, name, size):
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {values.shape}")
    return values
