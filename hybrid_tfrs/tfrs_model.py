"""A TensorFlow Recommenders (legacy Keras 2) model over the same encoder layers.

tensorflow-recommenders 0.7.7 imports only when ``tf.keras`` is Keras 2, so set
``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported; the encoder layers then
build on ``tf_keras`` (see ``hybrid_tfrs.backend``).

Example:
    import os; os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras
    from hybrid_tfrs import build_encoder
    from hybrid_tfrs.tfrs_model import TFRSRetrievalModel
    model = TFRSRetrievalModel(build_encoder("hybrid", num_items=N, max_len=50))
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    model.fit(dataset_of({"item_ids": ..., "targets": ...}))
"""

import tensorflow as tf

from hybrid_tfrs.backend import LEGACY_KERAS

if not LEGACY_KERAS:
    raise ImportError(
        "hybrid_tfrs.tfrs_model needs legacy Keras: set TF_USE_LEGACY_KERAS=1 before "
        "importing TensorFlow (tensorflow-recommenders does not import under Keras 3); "
        "under Keras 3 use hybrid_tfrs.SequentialRetrievalModel"
    )

import tensorflow_recommenders as tfrs  # noqa: E402  (needs the check above first)


class TFRSRetrievalModel(tfrs.Model):
    """``tfrs.Model`` + ``tfrs.tasks.Retrieval`` (in-batch softmax) over an encoder.

    Every non-padded position is a query; its candidate is the next item's
    row of the encoder's item table; other targets in the batch are the
    negatives, accidental hits removed.

    Features: ``{"item_ids": [B, L] int, "targets": [B, L] int}`` (0 = padding).

    Float32 only: ``tfrs.tasks.Retrieval`` takes no dtype and would score under
    a mixed global policy in 16 bits; mixed precision needs the Keras 3
    ``SequentialRetrievalModel``.
    """

    def __init__(self, encoder, **kwargs):
        policies = {
            "the encoder's": encoder.dtype_policy.name,
            "the global": tf.keras.mixed_precision.global_policy().name,
        }
        for whose, policy in policies.items():
            if policy != "float32":
                raise ValueError(
                    f"TFRSRetrievalModel trains in float32, but {whose} dtype policy is "
                    f"{policy!r}; for mixed precision use the Keras 3 SequentialRetrievalModel"
                )
        super().__init__(**kwargs)
        self.encoder = encoder
        self.task = tfrs.tasks.Retrieval(remove_accidental_hits=True)

    def compute_loss(self, features, training=False):
        hidden = self.encoder(features["item_ids"], training=training)
        queries = tf.reshape(hidden, [-1, hidden.shape[-1]])
        targets = tf.reshape(tf.cast(features["targets"], tf.int32), [-1])
        valid = tf.not_equal(targets, 0)
        queries = tf.boolean_mask(queries, valid)
        targets = tf.boolean_mask(targets, valid)
        candidates = tf.gather(self.encoder.item_embeddings, targets)
        return self.task(queries, candidates, candidate_ids=targets, compute_metrics=False)
