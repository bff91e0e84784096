"""Residual blocks around a sequence mixer, as in SASRec / LinRec / FMLP-Rec."""

from hybrid_tfrs.backend import LEGACY_KERAS, keras, ops, register_serializable
from hybrid_tfrs.layers.frequency_filter import FrequencyFilter
from hybrid_tfrs.layers.linear_attention import LinearAttention

MIXERS = ("linrec", "fmlp", "sasrec")


@register_serializable()
class FeedForward(keras.layers.Layer):
    """Position-wise FFN with residual and LayerNorm: ``LN(x + drop(W2 gelu(W1 x)))``.

    ``normalize_first=True`` normalises the input instead (pre-LN, as keras-hub's
    ``TransformerEncoder(normalize_first=True)``): ``x + drop(W2 gelu(W1 LN(x)))``.

    Call args: inputs [B, L, d]. Returns [B, L, d].
    """

    def __init__(self, inner_dim, dropout_rate=0.0, normalize_first=False, **kwargs):
        super().__init__(**kwargs)
        self.inner_dim = inner_dim
        self.dropout_rate = dropout_rate
        self.normalize_first = normalize_first
        self.supports_masking = True

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        self.inner = keras.layers.Dense(
            self.inner_dim, activation="gelu", name="inner", dtype=self.dtype_policy
        )
        self.inner.build(input_shape)
        self.outer = keras.layers.Dense(hidden_dim, name="outer", dtype=self.dtype_policy)
        self.outer.build(tuple(input_shape[:-1]) + (self.inner_dim,))
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)
        self.norm = keras.layers.LayerNormalization(
            epsilon=1e-12, name="norm", dtype=self.dtype_policy
        )
        self.norm.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = self.norm(inputs) if self.normalize_first else inputs
        y = self.dropout(self.outer(self.inner(x)), training=training)
        return inputs + y if self.normalize_first else self.norm(inputs + y)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            inner_dim=self.inner_dim,
            dropout_rate=self.dropout_rate,
            normalize_first=self.normalize_first,
        )
        return config


@register_serializable()
class MixerBlock(keras.layers.Layer):
    """One encoder layer: ``x = LN(x + drop(mixer(x))); x = FFN(x)`` (post-LN).

    ``normalize_first=True``: ``x = x + drop(mixer(LN(x)))``, and the FFN
    likewise (pre-LN, as the original SASRec code; a stack of such blocks
    needs a LayerNorm after its last one, which ``SequenceEncoder`` adds).

    Padded positions are zeroed before the mixer, so position embeddings of
    padding never leak into the mix.

    Args:
        mixer: ``"linrec"`` (``LinearAttention``), ``"fmlp"`` (``FrequencyFilter``)
            or ``"sasrec"`` (softmax multi-head self-attention).
        max_len: sequence length (the filter's length).
        num_heads: attention heads (linrec, sasrec).
        inner_dim: FFN width; dropout_rate: dropout after mixer and FFN.
        causal: causal forms (default) or the papers' bidirectional ones.
        chunk_size: chunk length of causal linear attention.
        use_ffn: False leaves out the FFN (for an FFN shared between blocks,
            applied by the caller).
        normalize_first: pre-LN instead of post-LN.

    Call args:
        inputs: [B, L, d]. mask: optional [B, L] (1 = item, 0 = padding);
            Keras' own mask (e.g. from ``Embedding(mask_zero=True)``) is used
            when none is passed.

    Returns:
        [B, L, d].
    """

    def __init__(
        self,
        mixer,
        max_len,
        num_heads=2,
        inner_dim=256,
        dropout_rate=0.0,
        causal=True,
        chunk_size=64,
        use_ffn=True,
        normalize_first=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {mixer!r}")
        self.mixer = mixer
        self.max_len = max_len
        self.num_heads = num_heads
        self.inner_dim = inner_dim
        self.dropout_rate = dropout_rate
        self.causal = causal
        self.chunk_size = chunk_size
        self.use_ffn = use_ffn
        self.normalize_first = normalize_first
        self.supports_masking = True

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if self.mixer == "linrec":
            self.mix = LinearAttention(
                num_heads=self.num_heads,
                causal=self.causal,
                chunk_size=self.chunk_size,
                name="mix",
                dtype=self.dtype_policy,
            )
            self.mix.build(input_shape)
        elif self.mixer == "fmlp":
            self.mix = FrequencyFilter(
                max_len=self.max_len, causal=self.causal, name="mix", dtype=self.dtype_policy
            )
            self.mix.build(input_shape)
        else:
            if hidden_dim % self.num_heads:
                raise ValueError(
                    f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({self.num_heads})"
                )
            self.mix = keras.layers.MultiHeadAttention(
                num_heads=self.num_heads,
                key_dim=hidden_dim // self.num_heads,
                dropout=self.dropout_rate,
                name="mix",
                dtype=self.dtype_policy,
            )
            if not LEGACY_KERAS:  # tf_keras's builds itself on its first call
                self.mix.build(input_shape, input_shape)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)
        self.norm = keras.layers.LayerNormalization(
            epsilon=1e-12, name="norm", dtype=self.dtype_policy
        )
        self.norm.build(input_shape)
        self.ffn = None
        if self.use_ffn:
            self.ffn = FeedForward(
                self.inner_dim,
                self.dropout_rate,
                self.normalize_first,
                name="ffn",
                dtype=self.dtype_policy,
            )
            self.ffn.build(input_shape)
        super().build(input_shape)

    def _attention_mask(self, mask):
        """[B, L] padding mask -> [B, L, L] boolean: query t may attend key s."""
        keys = ops.cast(mask, "bool")[:, None, :]
        length = ops.shape(mask)[1]
        allowed = ops.ones((length, length), dtype="int32")
        if self.causal:
            allowed = ops.tril(allowed)
        return ops.logical_and(keys, (allowed > 0)[None, :, :])

    def call(self, inputs, mask=None, training=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        keep = ops.cast(mask, inputs.dtype)[:, :, None]
        x = inputs * keep
        h = self.norm(x) * keep if self.normalize_first else x
        if self.mixer == "sasrec":
            y = self.mix(h, h, attention_mask=self._attention_mask(mask), training=training)
        else:
            y = self.mix(h, mask=mask)
        x = x + self.dropout(y, training=training)
        x = x if self.normalize_first else self.norm(x)
        return self.ffn(x, training=training) if self.ffn is not None else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            mixer=self.mixer,
            max_len=self.max_len,
            num_heads=self.num_heads,
            inner_dim=self.inner_dim,
            dropout_rate=self.dropout_rate,
            causal=self.causal,
            chunk_size=self.chunk_size,
            use_ffn=self.use_ffn,
            normalize_first=self.normalize_first,
        )
        return config
