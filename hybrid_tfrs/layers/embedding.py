"""Item + position embedding of a history, as in SASRec / FMLP-Rec."""

from hybrid_tfrs.backend import keras, ops, register_serializable


@register_serializable()
class SequenceEmbedding(keras.layers.Layer):
    """``dropout(LN(item_emb[ids] + pos_emb[0..L-1]))``, zero at padding.

    The item table (``item_embedding``, [N + 1, d], row 0 = padding) is the one
    the candidate tower scores against.

    Args:
        num_items: catalogue size N (ids 1..N, 0 = padding).
        max_len: number of position embeddings.
        hidden_dim: d.
        dropout_rate: embedding dropout.

    Call args:
        item_ids: [B, L] int, L <= max_len.

    Returns:
        [B, L, d] float.
    """

    def __init__(self, num_items, max_len, hidden_dim, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_items = num_items
        self.max_len = max_len
        self.hidden_dim = hidden_dim
        self.dropout_rate = dropout_rate

    def build(self, input_shape):
        self.item_embedding = keras.layers.Embedding(
            self.num_items + 1,
            self.hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="item_embedding",
            dtype=self.dtype_policy,
        )
        self.item_embedding.build(input_shape)
        self.position_embedding = keras.layers.Embedding(
            self.max_len,
            self.hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="position_embedding",
            dtype=self.dtype_policy,
        )
        self.position_embedding.build(input_shape)
        self.norm = keras.layers.LayerNormalization(
            epsilon=1e-12, name="norm", dtype=self.dtype_policy
        )
        self.norm.build(tuple(input_shape) + (self.hidden_dim,))
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)
        super().build(input_shape)

    def call(self, item_ids, training=None):
        positions = ops.arange(ops.shape(item_ids)[1], dtype="int32")
        x = self.item_embedding(item_ids) + self.position_embedding(positions)[None, :, :]
        x = self.dropout(self.norm(x), training=training)
        return x * ops.cast(ops.not_equal(item_ids, 0), x.dtype)[:, :, None]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_items=self.num_items,
            max_len=self.max_len,
            hidden_dim=self.hidden_dim,
            dropout_rate=self.dropout_rate,
        )
        return config
