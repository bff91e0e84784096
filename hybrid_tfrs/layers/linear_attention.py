"""LinRec's L2-normalised linear attention (Liu et al., SIGIR 2023)."""

import math

from hybrid_tfrs.backend import keras, ops, register_serializable

_EPS = 1e-6


def _l2_normalise(x, axis):
    return x / ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True) + _EPS)


def causal_linear_attention(q, k, v, chunk_size):
    """Causal linear attention ``out_t = sum_{s<=t} (q_t . k_s) v_s``, chunk-wise.

    Quadratic inside each chunk of ``chunk_size`` positions and a carried
    ``d x d`` state across chunks, so memory is O(L d + (L/C) d^2).

    Args:
        q, k: [B, H, L, dk]. v: [B, H, L, dv].
        chunk_size: positions per chunk (C).

    Returns:
        [B, H, L, dv].
    """
    length = ops.shape(q)[2]
    if isinstance(length, int):
        chunk_size = max(1, min(chunk_size, length))  # no chunk wider than the input
    pad = (-length) % chunk_size
    padding = [[0, 0], [0, 0], [0, pad], [0, 0]]
    q, k, v = (ops.pad(t, padding) for t in (q, k, v))
    num_chunks = (length + pad) // chunk_size

    def chunked(t):
        # [B, H, L', d] -> [B, H, n, C, d]
        return ops.reshape(
            t, (ops.shape(t)[0], ops.shape(t)[1], num_chunks, chunk_size, ops.shape(t)[-1])
        )

    q, k, v = chunked(q), chunked(k), chunked(v)
    lower = ops.tril(ops.ones((chunk_size, chunk_size), dtype=q.dtype))
    scores = ops.einsum("bhncd,bhnmd->bhncm", q, k) * lower
    intra = ops.einsum("bhncm,bhnme->bhnce", scores, v)
    chunk_states = ops.einsum("bhncd,bhnce->bhnde", k, v)
    # State carried into chunk n: sum of the states of chunks before n.
    carried = ops.cumsum(chunk_states, axis=2) - chunk_states
    inter = ops.einsum("bhncd,bhnde->bhnce", q, carried)
    out = intra + inter
    out = ops.reshape(
        out, (ops.shape(out)[0], ops.shape(out)[1], num_chunks * chunk_size, ops.shape(out)[-1])
    )
    return out[:, :, :length, :]


@register_serializable()
class LinearAttention(keras.layers.Layer):
    """Multi-head LinRec attention: ELU features, L2 normalisation, O(L d^2).

    Queries ``q' = elu(Q)`` are L2-normalised over the head dimension, keys
    ``k' = elu(K)`` over the sequence positions, and
    ``out = q' (k'^T V) / sqrt(d_head)``.

    With ``causal=True`` (default) position t only sees positions s <= t and the
    key normalisation runs over s <= t (``n_t = sqrt(sum_{s<=t} k_s^2)``), so
    the output at t equals the bidirectional layer run on the prefix ending at
    t. It is computed chunk-wise (``chunk_size``). ``causal=False`` is the
    paper's bidirectional form. Padded positions (``mask == 0``) never
    contribute as keys or values.

    The projections run in the layer's compute dtype; the normalisation and
    the attention products run in float32 whatever the dtype policy (under
    ``mixed_float16`` the gradient of ``q / n_t``, about ``1 / n_t^2``,
    overflows float16 where a key is near zero).

    Args:
        num_heads: number of heads; ``hidden_dim`` must be divisible by it.
        causal: exact prefix (causal) form, or the paper's bidirectional form.
        chunk_size: chunk length of the causal computation.

    Call args:
        inputs: [B, L, d] float.
        mask: optional [B, L], 1 for items, 0 for padding.

    Returns:
        [B, L, d].

    Example:
    >>> layer = LinearAttention(num_heads=2)
    >>> tuple(layer(keras.random.normal((4, 10, 8))).shape)
    (4, 10, 8)
    """

    def __init__(self, num_heads=2, causal=True, chunk_size=64, **kwargs):
        super().__init__(**kwargs)
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.num_heads = num_heads
        self.causal = causal
        self.chunk_size = chunk_size
        self.supports_masking = True

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        self.head_dim = hidden_dim // self.num_heads
        self.query_dense = keras.layers.Dense(hidden_dim, name="query", dtype=self.dtype_policy)
        self.key_dense = keras.layers.Dense(hidden_dim, name="key", dtype=self.dtype_policy)
        self.value_dense = keras.layers.Dense(hidden_dim, name="value", dtype=self.dtype_policy)
        self.output_dense = keras.layers.Dense(hidden_dim, name="output", dtype=self.dtype_policy)
        for dense in (self.query_dense, self.key_dense, self.value_dense):
            dense.build(input_shape)
        self.output_dense.build(input_shape)
        super().build(input_shape)

    def _split_heads(self, x):
        # [B, L, d] -> [B, H, L, dh]
        x = ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, inputs, mask=None):
        keep = None
        if mask is not None:
            keep = ops.cast(mask, "float32")[:, None, :, None]  # [B, 1, L, 1]
        q, k, v = (
            ops.cast(self._split_heads(dense(inputs)), "float32")
            for dense in (self.query_dense, self.key_dense, self.value_dense)
        )
        q, k = ops.elu(q), ops.elu(k)
        if keep is not None:
            k, v = k * keep, v * keep
        q = _l2_normalise(q, axis=-1)
        if self.causal:
            key_norm = ops.sqrt(ops.cumsum(ops.square(k), axis=2) + _EPS)  # n_t
            out = causal_linear_attention(q / key_norm, k, v, self.chunk_size)
        else:
            k = _l2_normalise(k, axis=2)
            out = ops.einsum("bhld,bhde->bhle", q, ops.einsum("bhld,bhle->bhde", k, v))
        out = ops.cast(out / math.sqrt(self.head_dim), self.compute_dtype)
        out = ops.transpose(out, (0, 2, 1, 3))
        out = ops.reshape(
            out, (ops.shape(out)[0], ops.shape(out)[1], self.num_heads * self.head_dim)
        )
        return self.output_dense(out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, causal=self.causal, chunk_size=self.chunk_size)
        return config
