"""The gate that blends the two branches per user and position."""

import math

from hybrid_tfrs.backend import keras, ops, register_serializable

_EPS = 1e-6
FEATURE_NAMES = (
    "log_length",
    "mean_log_popularity",
    "std_log_popularity",
    "repeat_ratio",
    "latest_log_popularity",
)


def repeat_flags(item_ids):
    """1 where an item already occurred earlier in the row, else 0.

    Compares every position with the positions before it: O(L^2) boolean
    comparisons with no hidden-size factor, which XLA fuses into one pass.
    (A sort-based O(L log L) version was 5-7x slower per training step on
    CPU under XLA at L=200..800, measured with dropout in the model.)

    Args:
        item_ids: [B, L] int.

    Returns:
        [B, L] float32.
    """
    length = ops.shape(item_ids)[1]
    earlier = ops.tril(ops.ones((length, length), dtype="int32"), k=-1) > 0  # s < t
    same = ops.equal(item_ids[:, :, None], item_ids[:, None, :])  # [B, t, s]
    return ops.cast(ops.any(ops.logical_and(same, earlier[None, :, :]), axis=2), "float32")


@register_serializable()
class SequenceStatsGate(keras.layers.Layer):
    """alpha in (0, 1) per position, from statistics of the history so far.

    Features at position t use positions s <= t only (so the gate is causal)
    and ignore padding (item id 0):

    - ``log_length``: log(1 + t') / log(1 + max_len), t' = items so far;
    - mean and standard deviation of the items' log popularity;
    - ``repeat_ratio``: share of items so far that repeat an earlier item;
    - ``latest_log_popularity``: log popularity of the item at t.

    Log popularity is ``log(1 + count) / log(1 + max count)`` with training
    counts held in a non-trainable weight (``set_item_popularity``), so an
    exported model computes the same features. A small MLP maps the features
    to ``alpha = sigmoid(...)``.

    Args:
        num_items: catalogue size N (ids 1..N, 0 = padding).
        max_len: longest sequence, to scale the length feature.
        hidden_units: width of the gate's hidden layer.
        use_statistics: if False the features are replaced by a constant, so
            the gate learns one global alpha (an ablation).

    Call args:
        item_ids: [B, L] int.

    Returns:
        alpha: [B, L, 1] float in (0, 1).

    Example:
    >>> gate = SequenceStatsGate(num_items=100, max_len=10)
    >>> gate(ops.ones((2, 10), dtype="int32")).shape
    (2, 10, 1)
    """

    def __init__(self, num_items, max_len, hidden_units=16, use_statistics=True, **kwargs):
        super().__init__(**kwargs)
        self.num_items = num_items
        self.max_len = max_len
        self.hidden_units = hidden_units
        self.use_statistics = use_statistics

    def build(self, input_shape):
        self.item_counts = self.add_weight(
            name="item_counts",
            shape=(self.num_items + 1,),
            initializer="zeros",
            trainable=False,
        )
        num_features = len(FEATURE_NAMES)
        self.hidden = keras.layers.Dense(self.hidden_units, activation="relu", name="hidden")
        self.hidden.build((None, None, num_features))
        self.out = keras.layers.Dense(1, name="alpha_logit")
        self.out.build((None, None, self.hidden_units))
        super().build(input_shape)

    def set_item_popularity(self, counts):
        """Sets training counts: array [num_items + 1], index 0 ignored."""
        if not self.built:
            self.build((None, None))
        counts = ops.convert_to_numpy(counts).astype("float32").reshape(-1)
        if counts.shape[0] != self.num_items + 1:
            raise ValueError(
                f"item popularity must have num_items + 1 = {self.num_items + 1} entries, "
                f"got {counts.shape[0]}"
            )
        self.item_counts.assign(counts)

    def features(self, item_ids):
        """The gate's input features: [B, L, 5] (see ``FEATURE_NAMES``)."""
        mask = ops.cast(ops.not_equal(item_ids, 0), "float32")
        count = ops.cumsum(mask, axis=1)
        safe_count = ops.maximum(count, 1.0)
        log_counts = ops.log1p(self.item_counts)
        log_pop = ops.take(log_counts / ops.maximum(ops.max(log_counts), _EPS), item_ids) * mask
        mean_pop = ops.cumsum(log_pop, axis=1) / safe_count
        mean_sq = ops.cumsum(ops.square(log_pop), axis=1) / safe_count
        std_pop = ops.sqrt(ops.maximum(mean_sq - ops.square(mean_pop), 0.0) + _EPS)
        repeats = ops.cumsum(repeat_flags(item_ids) * mask, axis=1) / safe_count
        log_length = ops.log1p(count) / math.log1p(self.max_len)
        feats = ops.stack([log_length, mean_pop, std_pop, repeats, log_pop], axis=-1)
        return feats * mask[:, :, None]

    def call(self, item_ids):
        feats = self.features(item_ids)
        if not self.use_statistics:
            feats = ops.zeros_like(feats)
        return ops.sigmoid(self.out(self.hidden(feats)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (1,)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_items=self.num_items,
            max_len=self.max_len,
            hidden_units=self.hidden_units,
            use_statistics=self.use_statistics,
        )
        return config


@register_serializable()
class HiddenStateGate(keras.layers.Layer):
    """alpha in (0, 1) per position, learned from the two branches' outputs.

    The ablation of ``SequenceStatsGate`` that keeps a per-user, per-position
    alpha but ignores the sequence statistics: a small MLP reads the
    concatenated branch outputs at t (causal when the branches are).

    Args:
        hidden_units: width of the gate's hidden layer.

    Call args:
        first, second: [B, L, d] branch outputs.

    Returns:
        alpha: [B, L, 1] float in (0, 1).

    Example:
    >>> gate = HiddenStateGate()
    >>> gate(ops.ones((2, 10, 8)), ops.zeros((2, 10, 8))).shape
    (2, 10, 1)
    """

    def __init__(self, hidden_units=16, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.supports_masking = True  # one alpha per position: the padding mask still holds

    def build(self, first_shape, second_shape=None):
        width = first_shape[-1] * 2
        self.hidden = keras.layers.Dense(self.hidden_units, activation="relu", name="hidden")
        self.hidden.build((None, None, width))
        self.out = keras.layers.Dense(1, name="alpha_logit")
        self.out.build((None, None, self.hidden_units))
        super().build(first_shape)

    def call(self, first, second):
        return ops.sigmoid(self.out(self.hidden(ops.concatenate([first, second], axis=-1))))

    def compute_output_shape(self, first_shape, second_shape=None):
        return tuple(first_shape[:-1]) + (1,)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units)
        return config
