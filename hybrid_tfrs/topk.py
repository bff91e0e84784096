"""Top-k items of a large catalogue, scored a chunk of the item table at a time.

A query batch [B, d] is scored against items lo..hi-1 of the item table
(chunks of ``chunk_size`` rows), and each chunk's scores [B, hi - lo] are merged
into a running top-k [B, k]. Memory is O(B x (k + chunk_size)), never O(B x N),
and the result equals ``ops.top_k`` over the whole row, ties included: equal
scores keep the lower item index first because the running best (earlier,
lower indices) precedes the chunk (in index order) when they are merged and
TensorFlow's ``top_k`` is stable (another backend's ``top_k`` may order ties
its own way). Item 0 (padding) is never a candidate.

Excluded items (a history, for instance) are given as (row, item) pairs and
score -inf; an offset (row, item, value) adds one value to the scores of its
pairs (a learned seen-item bias). Slots that only -inf items could fill hold -inf; their ids are
undefined (0 or an excluded item), so callers map them to "no item".

``chunked_top_k`` loops in Python (eager, any backend); the SavedModel export
runs ``merge_chunk`` inside a ``tf.while_loop`` (hybrid_tfrs.export).
"""

import numpy as np

from hybrid_tfrs.backend import ops

# Items scored at a time by default: a [B, 65536] float32 chunk is 256 KiB a row.
DEFAULT_CHUNK_SIZE = 2**16


def initial_top_k(batch, k, dtype="float32"):
    """The empty running top-k: (scores -inf [B, k], ids 0 [B, k] int32)."""
    return ops.full((batch, k), -np.inf, dtype=dtype), ops.zeros((batch, k), dtype="int32")


def merge_chunk(query, item_table, lo, hi, best, excluded=None, offset=None):
    """Scores items lo..hi-1 and merges them into the running top-k.

    Args:
        query: float [B, d].
        item_table: float [N + 1, d] (row 0 is padding; lo >= 1).
        lo, hi: the chunk's item range, 1 <= lo < hi <= N + 1 (ints or scalar tensors).
        best: (scores float [B, k], ids int32 [B, k]), best first.
        excluded: optional (rows int32 [P], items int32 [P]) pairs scoring -inf.
        offset: optional (rows int32 [Q], items int32 [Q], value scalar): the
            value is added to those pairs' scores (a pair listed twice once).

    Returns:
        (scores float [B, k], ids int32 [B, k]), the top-k of best and the chunk.
    """
    best_scores, best_ids = best
    size = hi - lo
    chunk = ops.slice(item_table, [lo, 0], [size, ops.shape(item_table)[1]])
    # [B, size]; (chunk @ query.T).T never copies the chunk transposed
    scores = ops.transpose(ops.matmul(chunk, ops.transpose(query)))
    if offset is not None:
        rows, items, value = offset
        scores = _set_pairs(
            scores, lo, rows, items, lambda old: old + ops.cast(value, scores.dtype)
        )
    if excluded is not None:
        rows, items = excluded
        scores = _set_pairs(scores, lo, rows, items, lambda old: ops.full_like(old, -np.inf))
    k = ops.shape(best_scores)[1]
    top_scores, positions = ops.top_k(ops.concatenate([best_scores, scores], axis=1), k)
    positions = ops.cast(positions, "int32")
    # Position p < k is the running best's p-th entry, else item lo + p - k.
    from_best = ops.take_along_axis(best_ids, ops.minimum(positions, k - 1), axis=1)
    return top_scores, ops.where(positions < k, from_best, positions - k + lo)


def _set_pairs(scores, lo, rows, items, new_value):
    """scores [B, size] of items lo..: the (row, item) pairs inside get ``new_value(old)``."""
    size = ops.shape(scores)[1]
    inside = ops.logical_and(items >= lo, items < lo + size)
    # Pairs outside the chunk land in an extra column that is dropped.
    columns = ops.where(inside, items - lo, size)
    padded = ops.pad(scores, [[0, 0], [0, 1]])
    old = ops.take(ops.reshape(padded, [-1]), rows * (size + 1) + columns)
    padded = ops.scatter_update(padded, ops.stack([rows, columns], axis=1), new_value(old))
    return padded[:, :size]


def chunked_top_k(query, item_table, k, chunk_size=DEFAULT_CHUNK_SIZE, excluded=None, offset=None):
    """Top-k items 1..N for each query, ``chunk_size`` items scored at a time.

    Args:
        query: float [B, d].
        item_table: float [N + 1, d], row 0 padding.
        k: 1..N.
        chunk_size: positive int.
        excluded: optional (rows int32 [P], items int32 [P]) pairs left out.
        offset: optional (rows int32 [Q], items int32 [Q], value): added to
            those pairs' scores (see ``merge_chunk``).

    Returns:
        (ids int32 [B, k], scores float [B, k]), best first.
    """
    num_items = int(item_table.shape[0]) - 1
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if not 1 <= k <= num_items:
        raise ValueError(f"k must be in 1..{num_items}, got {k}")
    item_table = ops.convert_to_tensor(item_table)  # once, not a copy per chunk
    best = initial_top_k(ops.shape(query)[0], k, dtype=query.dtype)
    for lo in range(1, num_items + 1, chunk_size):
        best = merge_chunk(
            query, item_table, lo, min(lo + chunk_size, num_items + 1), best, excluded, offset
        )
    scores, ids = best
    return ids, scores
