"""Training losses of the retrieval model, written with ``keras.ops``.

Every loss reads the query vectors at every position ([B, L, d]), the shared
item table ([N + 1, d], row 0 = padding) and the next-item targets ([B, L],
0 = no loss at that position), and returns the mean over the batch's targets
(non-padded positions), or with ``normalizer`` their sum divided by it: a
constant normalizer gives every target the same weight whatever the batch it
falls in (length bucketing makes batches of short histories hold few targets,
so a per-batch mean weighs each of them more).

With ``seen_bias`` (a :class:`~hybrid_tfrs.layers.seen_item_bias.SeenItemBias`)
and the inputs ``item_ids`` [B, L], every candidate that position t's history
(positions <= t) already holds gets the layer's learned offset.
"""

from hybrid_tfrs.backend import keras, ops, random
from hybrid_tfrs.config import LOSSES, NEGATIVE_SAMPLERS  # noqa: F401  (re-exported)
from hybrid_tfrs.layers.seen_item_bias import seen_in_prefix_own, seen_in_prefix_shared
from hybrid_tfrs.layers.sequence_features import repeat_flags

_NEG_INF = -1e9


def _flatten(hidden, targets):
    d = ops.shape(hidden)[-1]
    queries = ops.reshape(hidden, (-1, d))
    targets = ops.reshape(ops.cast(targets, "int32"), (-1,))
    weights = ops.cast(ops.not_equal(targets, 0), queries.dtype)
    return queries, targets, weights


def _reduce(per_position, weights, normalizer):
    """Mean over the targets (``normalizer`` None), or their sum / ``normalizer``."""
    total = ops.sum(per_position * weights)
    if normalizer is None:
        return total / ops.maximum(ops.sum(weights), 1.0)
    return total / normalizer


def _own_seen(item_ids, candidates):
    """[BL] mask: each position's own candidate ([B, L]) is in its prefix."""
    return ops.reshape(seen_in_prefix_own(item_ids, candidates), (-1,))


def full_softmax_loss(hidden, item_table, targets, normalizer=None, item_ids=None, seen_bias=None):
    """Cross-entropy over the whole catalogue (item 0 is never a class)."""
    own_targets = targets
    queries, targets, weights = _flatten(hidden, targets)
    logits = ops.matmul(queries, ops.transpose(item_table))  # [BL, N + 1]
    padding_column = ops.one_hot(ops.zeros_like(targets), ops.shape(item_table)[0])
    log_z = ops.logsumexp(logits + padding_column * _NEG_INF, axis=-1)  # [BL]
    # The target's logit gathered from the table, not from ``logits``: a gather's
    # gradient there would scatter into a dense [BL, N + 1] tensor (slow under
    # XLA on CPU; the fused sparse cross-entropy is slower too).
    target_logits = ops.sum(queries * ops.take(item_table, targets, axis=0), axis=-1)
    if seen_bias is not None:
        log_z = log_z + _seen_log_z_shift(hidden, item_table, log_z, item_ids, seen_bias.bias)
        target_logits = target_logits + ops.cast(seen_bias.bias, log_z.dtype) * _own_seen(
            item_ids, own_targets
        )
    return _reduce(log_z - target_logits, weights, normalizer)


def _seen_log_z_shift(hidden, item_table, log_z, item_ids, bias):
    """[BL] log Z' - log Z when ``bias`` is added to each prefix's items' logits.

    Never forms a second [BL, N + 1] tensor: with P the softmax mass of the
    prefix's distinct items (their logits are a [B, L, L] product),
    log Z' = log Z + log((1 - P) + e^bias P).

    Args:
        hidden: [B, L, d] queries; item_table: [N + 1, d]; log_z: [BL] log
        partition (padding column excluded); item_ids: int [B, L].
    """
    batch, length = ops.shape(item_ids)[0], ops.shape(item_ids)[1]
    log_z = ops.reshape(log_z, (batch, length))
    prefix_logits = ops.einsum(  # [B, t, s]: query at t . item at s
        "btd,bsd->bts", hidden, ops.take(item_table, item_ids, axis=0)
    )
    positions = ops.arange(length)
    first = ops.logical_and(item_ids > 0, repeat_flags(item_ids) == 0)  # distinct items once
    counted = ops.logical_and(
        (positions[None, :] <= positions[:, None])[None], first[:, None, :]
    )  # [B, t, s]
    mass = ops.sum(
        ops.where(counted, ops.exp(prefix_logits - log_z[:, :, None]), 0.0), axis=-1
    )  # [B, L]
    shifted = ops.maximum(1.0 - mass, 0.0) + ops.exp(ops.cast(bias, mass.dtype)) * mass
    return ops.reshape(ops.log(ops.maximum(shifted, 1e-30)), (-1,))


def sample_negatives(targets, weights, num_items, num_negatives, sampler, seed):
    """Shared negatives for a batch and their sampling probabilities.

    - ``in-batch``: the targets of ``num_negatives`` positions drawn from the
      batch's non-padded positions (so items come in proportion to how often
      they are targets, i.e. popularity);
    - ``uniform``: drawn uniformly from 1..N;
    - ``mixed``: half of each.

    Args:
        targets, weights: [BL] flattened targets and 1/0 position weights.

    Returns:
        ids [M] int32 and sampling probabilities [M] (expected draws per batch,
        for the logQ correction; batch frequencies estimate popularity).
    """
    if sampler not in NEGATIVE_SAMPLERS:
        raise ValueError(f"sampler must be one of {NEGATIVE_SAMPLERS}, got {sampler!r}")
    num_batch = {"in-batch": num_negatives, "uniform": 0, "mixed": num_negatives // 2}[sampler]
    num_uniform = num_negatives - num_batch
    parts = []
    if num_batch:
        position_logits = ops.log(ops.maximum(weights, 1e-30))[None, :]
        positions = random.categorical(position_logits, num_batch, seed=seed)[0]
        parts.append(ops.take(targets, positions))
    if num_uniform:
        parts.append(random.randint((num_uniform,), 1, num_items + 1, seed=seed))
    ids = ops.cast(ops.concatenate(parts, axis=0), "int32")
    # Probability of drawing each sampled id under the mixture, times draws.
    batch_frequency = ops.sum(
        ops.cast(ops.equal(targets[None, :], ids[:, None]), "float32") * weights[None, :], axis=1
    ) / ops.maximum(ops.sum(weights), 1.0)
    probability = num_batch * batch_frequency + num_uniform / num_items
    return ids, probability


def sampled_softmax_loss(
    hidden,
    item_table,
    targets,
    num_negatives=256,
    sampler="mixed",
    logq_correction=True,
    remove_accidental_hits=True,
    seed=None,
    normalizer=None,
    item_ids=None,
    seen_bias=None,
):
    """Softmax over [own target] + shared sampled negatives.

    ``logq_correction`` subtracts log(expected draws) from the negatives'
    logits, so the negatives' summed exp-logits estimate the full softmax's
    denominator without bias. ``remove_accidental_hits`` masks a negative equal
    to the row's own target.

    Both are done here rather than with keras-rs 0.4's layers:
    ``SamplingProbabilityCorrection`` clips probabilities to 1 (expected draws
    exceed 1 for popular items), and ``RemoveAccidentalHits`` reads the
    positive's id from the first row when ``candidate_ids`` is per-row, which is
    this layout.
    """
    own_targets = targets
    queries, targets, weights = _flatten(hidden, targets)
    num_items = ops.shape(item_table)[0] - 1
    negative_ids, probability = sample_negatives(
        targets, weights, num_items, num_negatives, sampler, seed
    )
    positive_logits = ops.sum(queries * ops.take(item_table, targets, axis=0), axis=-1)
    negative_logits = ops.matmul(queries, ops.transpose(ops.take(item_table, negative_ids, axis=0)))
    if seen_bias is not None:
        positive_logits = seen_bias(positive_logits, _own_seen(item_ids, own_targets))
        seen = seen_in_prefix_shared(item_ids, negative_ids)
        negative_logits = seen_bias(
            negative_logits, ops.reshape(seen, (-1, ops.shape(negative_ids)[0]))
        )
    if logq_correction:
        negative_logits = negative_logits - ops.log(probability)[None, :]
    if remove_accidental_hits:
        hit = ops.equal(negative_ids[None, :], targets[:, None])
        negative_logits = ops.where(hit, _NEG_INF, negative_logits)
    logits = ops.concatenate([positive_logits[:, None], negative_logits], axis=1)
    per_position = keras.losses.sparse_categorical_crossentropy(
        ops.zeros_like(targets), logits, from_logits=True
    )
    return _reduce(per_position, weights, normalizer)


def bce_loss(
    hidden, item_table, targets, seed=None, normalizer=None, item_ids=None, seen_bias=None
):
    """SASRec / FMLP-Rec objective: BCE on the target and one uniform negative.

    A negative that equals the target carries no loss.
    """
    own_targets = targets
    queries, targets, weights = _flatten(hidden, targets)
    num_items = ops.shape(item_table)[0] - 1
    negatives = ops.cast(random.randint(ops.shape(targets), 1, num_items + 1, seed=seed), "int32")
    positive_logits = ops.sum(queries * ops.take(item_table, targets, axis=0), axis=-1)
    negative_logits = ops.sum(queries * ops.take(item_table, negatives, axis=0), axis=-1)
    if seen_bias is not None:
        positive_logits = seen_bias(positive_logits, _own_seen(item_ids, own_targets))
        own_negatives = ops.reshape(negatives, ops.shape(own_targets))
        negative_logits = seen_bias(negative_logits, _own_seen(item_ids, own_negatives))
    negative_weight = ops.cast(ops.not_equal(negatives, targets), queries.dtype)
    per_position = ops.softplus(-positive_logits) + negative_weight * ops.softplus(negative_logits)
    return _reduce(per_position, weights, normalizer)
