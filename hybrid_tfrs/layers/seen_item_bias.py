"""A learned score offset for the items a history already holds.

A two-tower model scores item i as ``q . e_i``. With the item table shared by
input and output, the query lands near the embeddings of the history's own
items, so on logs without repeats (MovieLens, Amazon 5-core) the model puts
already-seen items in its top slots, and on logs with repeats (music, grocery,
re-orders) it has no direct way to say how likely a repeat is. This layer adds
one learned scalar ``b`` to the score of every item in the history:

    score(i) = q . e_i + b * [i in history]

``b`` starts at 0 and is trained with the next-item loss: it goes negative on
data where the next item is never a seen one, positive where repeats are
common. At training, position t's history is the items at positions <= t, so
the offset stays causal.

The mask helpers return float masks of the shapes the losses use.
"""

from hybrid_tfrs.backend import keras, ops


def seen_in_prefix_shared(item_ids, candidate_ids):
    """Candidates shared by all positions against each prefix: [B, L, M].

    Args:
        item_ids: int [B, L], 0 = padding.
        candidate_ids: int [M], ids 1..N.
    """
    same = ops.equal(item_ids[:, :, None], ops.cast(candidate_ids, item_ids.dtype)[None, None, :])
    return ops.cast(ops.cumsum(ops.cast(same, "int32"), axis=1) > 0, "float32")


def seen_in_prefix_own(item_ids, candidate_ids):
    """One candidate per position against its own prefix: [B, L].

    Args:
        item_ids: int [B, L], 0 = padding.
        candidate_ids: int [B, L], the candidate of position t (e.g. its target).
    """
    length = ops.shape(item_ids)[1]
    at_or_before = ops.tril(ops.ones((length, length), dtype="int32")) > 0  # [t, s]: s <= t
    same = ops.equal(ops.cast(candidate_ids, item_ids.dtype)[:, :, None], item_ids[:, None, :])
    same = ops.logical_and(same, ops.not_equal(item_ids, 0)[:, None, :])
    return ops.cast(ops.any(ops.logical_and(same, at_or_before[None]), axis=2), "float32")


def seen_in_history(item_ids, num_classes):
    """Every class against each whole history: [B, C], 1 where class c is in item_ids[b].

    Args:
        item_ids: int [B, L], 0 = padding.
        num_classes: C (N + 1).
    """
    seen = ops.max(ops.one_hot(item_ids, num_classes), axis=1)
    not_padding = ops.cast(ops.arange(num_classes) > 0, seen.dtype)
    return seen * not_padding[None, :]


@keras.saving.register_keras_serializable(package="hybrid_tfrs")
class SeenItemBias(keras.layers.Layer):
    """Adds one learned scalar to the scores of already-seen items.

    Call args:
        scores: float [..., C], item scores.
        seen: float [..., C] (same shape), 1 where the item is in the history.

    Returns:
        ``scores + bias * seen``, float [..., C].

    Example:

    >>> layer = SeenItemBias()
    >>> ids = ops.convert_to_tensor([[1, 2, 0]])
    >>> scores = ops.zeros((1, 4))
    >>> tuple(layer(scores, seen_in_history(ids, 4)).shape)
    (1, 4)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # One scalar whatever the input shape: created here, so the layer is built.
        self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")
        self.built = True

    def call(self, scores, seen):
        return scores + ops.cast(self.bias, scores.dtype) * ops.cast(seen, scores.dtype)

    def compute_output_shape(self, scores_shape, seen_shape=None):
        return scores_shape
