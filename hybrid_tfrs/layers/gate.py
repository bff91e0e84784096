"""The gates that blend the two branches: one alpha for everyone, or per user and position."""

from hybrid_tfrs.backend import NO_AUTOCAST, keras, ops, register_serializable
from hybrid_tfrs.layers.sequence_features import (
    EPS,
    GROUPS_NEEDING_VECTORS,
    feature_names,
    sequence_features,
)

FEATURE_NAMES = feature_names(("basic",))


@register_serializable()
class SequenceStatsGate(keras.layers.Layer):
    """alpha in (0, 1) per position, from statistics of the history so far.

    The features (``hybrid_tfrs.layers.sequence_features``) at position t use
    positions s <= t only, so the gate is causal, and ignore padding (item id
    0). The default group, ``basic``:

    - ``log_length``: log(1 + t') / log(1 + max_len), t' = items so far;
    - mean and standard deviation of the items' log popularity;
    - ``repeat_ratio``: share of items so far that repeat an earlier item;
    - ``latest_log_popularity``: log popularity of the item at t.

    ``trend``, ``recency``, ``diversity`` and ``spectrum`` add popularity drift,
    repeat gaps, embedding spread and the autocorrelation of the embedding
    sequence. Log popularity is ``log(1 + count) / log(1 + max count)`` with
    training counts held in a non-trainable weight (``set_item_popularity``),
    so an exported model computes the same features. A small MLP maps the
    features (and, with ``context_dim``, a context such as the branch outputs)
    to ``alpha = sigmoid(...)``.

    Args:
        num_items: catalogue size N (ids 1..N, 0 = padding).
        max_len: longest sequence, to scale the length feature.
        hidden_units: width of the gate's hidden layer.
        use_statistics: if False the features are replaced by a constant, so
            the gate learns one global alpha through an MLP whose weights get no
            gradient; kept so that models saved that way still load
            (``GlobalGate`` is that alpha without the dead weights).
        features: feature groups, in order (default ``("basic",)``).
        output_units: 1 (one alpha a position) or d (one per hidden unit).
        context_dim: width of the optional ``context`` input (0 = none).
        window: latest items the ``recent_*`` features cover.

    Call args:
        item_ids: [B, L] int.
        item_vectors: [B, L, d] item embeddings; needed by ``diversity`` and
            ``spectrum`` (their gradient is stopped: they are statistics).
        context: [B, L, context_dim], read with the features when set.

    Returns:
        alpha: [B, L, output_units] float in (0, 1).

    Example:
    >>> gate = SequenceStatsGate(num_items=100, max_len=10)
    >>> tuple(gate(ops.ones((2, 10), dtype="int32")).shape)
    (2, 10, 1)
    """

    def __init__(
        self,
        num_items,
        max_len,
        hidden_units=16,
        use_statistics=True,
        features=("basic",),
        output_units=1,
        context_dim=0,
        window=8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_items = num_items
        self.max_len = max_len
        self.hidden_units = hidden_units
        self.use_statistics = use_statistics
        self.feature_groups = tuple(features)
        self.output_units = output_units
        self.context_dim = context_dim
        self.window = window
        self.feature_names = feature_names(self.feature_groups)

    @property
    def needs_item_vectors(self):
        return self.use_statistics and any(g in GROUPS_NEEDING_VECTORS for g in self.feature_groups)

    def build(self, item_ids_shape, item_vectors_shape=None, context_shape=None):
        self.item_counts = self.add_weight(
            name="item_counts",
            shape=(self.num_items + 1,),
            initializer="zeros",
            trainable=False,
            **NO_AUTOCAST,  # counts past float16's 65504 stay finite
        )
        width = len(self.feature_names) + self.context_dim
        self.hidden = keras.layers.Dense(
            self.hidden_units, activation="relu", name="hidden", dtype=self.dtype_policy
        )
        self.hidden.build((None, None, width))
        self.out = keras.layers.Dense(
            self.output_units, name="alpha_logit", dtype=self.dtype_policy
        )
        self.out.build((None, None, self.hidden_units))
        super().build(item_ids_shape)

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

    def features(self, item_ids, item_vectors=None):
        """The gate's input features: [B, L, F] (see ``feature_names``)."""
        log_counts = ops.log1p(self.item_counts)
        log_popularity = log_counts / ops.maximum(ops.max(log_counts), EPS)
        if item_vectors is not None:
            item_vectors = ops.stop_gradient(item_vectors)
        return sequence_features(
            item_ids,
            log_popularity,
            self.max_len,
            self.feature_groups,
            item_vectors=item_vectors,
            window=self.window,
        )

    def call(self, item_ids, item_vectors=None, context=None):
        if self.use_statistics:
            inputs = self.features(item_ids, item_vectors)
        else:
            zeros = ops.zeros_like(ops.cast(item_ids, "float32"))[:, :, None]
            inputs = zeros + ops.zeros((len(self.feature_names),))
        if self.context_dim:
            inputs = ops.concatenate([inputs, ops.cast(context, inputs.dtype)], axis=-1)
        return ops.sigmoid(self.out(self.hidden(inputs)))

    def compute_output_shape(self, item_ids_shape, item_vectors_shape=None, context_shape=None):
        return tuple(item_ids_shape) + (self.output_units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_items=self.num_items,
            max_len=self.max_len,
            hidden_units=self.hidden_units,
            use_statistics=self.use_statistics,
            features=list(self.feature_groups),
            output_units=self.output_units,
            context_dim=self.context_dim,
            window=self.window,
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
        output_units: 1 (one alpha a position) or d (one per hidden unit).

    Call args:
        first, second: [B, L, d] branch outputs.

    Returns:
        alpha: [B, L, output_units] float in (0, 1).

    Example:
    >>> gate = HiddenStateGate()
    >>> tuple(gate(ops.ones((2, 10, 8)), ops.zeros((2, 10, 8))).shape)
    (2, 10, 1)
    """

    def __init__(self, hidden_units=16, output_units=1, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.output_units = output_units
        self.supports_masking = True  # one alpha per position: the padding mask still holds

    def build(self, first_shape, second_shape=None):
        width = first_shape[-1] * 2
        self.hidden = keras.layers.Dense(
            self.hidden_units, activation="relu", name="hidden", dtype=self.dtype_policy
        )
        self.hidden.build((None, None, width))
        self.out = keras.layers.Dense(
            self.output_units, name="alpha_logit", dtype=self.dtype_policy
        )
        self.out.build((None, None, self.hidden_units))
        super().build(first_shape)

    def call(self, first, second):
        return ops.sigmoid(self.out(self.hidden(ops.concatenate([first, second], axis=-1))))

    def compute_output_shape(self, first_shape, second_shape=None):
        return tuple(first_shape[:-1]) + (self.output_units,)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units, output_units=self.output_units)
        return config


@register_serializable()
class GlobalGate(keras.layers.Layer):
    """One learned alpha in (0, 1) for every user and position.

    The hybrid's default gate: ``alpha = sigmoid(logit)``, one trainable logit
    per output unit, starting at 0 (alpha 0.5). Frozen (``trainable=False``)
    it is the fixed blend at 0.5. It reads nothing of the history, so it costs
    nothing per position beyond the broadcast.

    Args:
        output_units: 1 (one alpha) or d (one per hidden unit); times the
            number of layers when the blend is inside every layer.

    Call args:
        item_ids: [B, L] int; only its shape is used.

    Returns:
        alpha: [B, L, output_units] float in (0, 1), the same at every position.

    Example:
    >>> gate = GlobalGate()
    >>> tuple(gate(ops.ones((2, 10), dtype="int32")).shape)
    (2, 10, 1)
    """

    def __init__(self, output_units=1, **kwargs):
        super().__init__(**kwargs)
        self.output_units = output_units

    def build(self, item_ids_shape):
        self.alpha_logit = self.add_weight(
            name="alpha_logit", shape=(self.output_units,), initializer="zeros"
        )
        super().build(item_ids_shape)

    def call(self, item_ids):
        ones = ops.ones_like(ops.cast(item_ids, self.compute_dtype))[:, :, None]
        return ones * ops.cast(ops.sigmoid(self.alpha_logit), self.compute_dtype)

    def compute_output_shape(self, item_ids_shape):
        return tuple(item_ids_shape) + (self.output_units,)

    def get_config(self):
        config = super().get_config()
        config.update(output_units=self.output_units)
        return config
