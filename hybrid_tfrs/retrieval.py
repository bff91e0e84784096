"""Two-tower sequential retrieval model (Keras 3).

Query tower: the sequence encoder's output at every non-padded position.
Candidate tower: the encoder's item table. Trained with every position's next
item as target (causal encoders), served by scoring the last position's query
vector against the item table.
"""

import numpy as np

# What Keras's own losses do under tf.distribute (a no-op otherwise): the
# optimizer sums the replicas' gradients, so a per-replica mean must be divided
# by the number of replicas.
from keras.src.losses.loss import scale_loss_for_distribution

from hybrid_tfrs import losses
from hybrid_tfrs.backend import LEGACY_KERAS, keras, ops, random
from hybrid_tfrs.config import LOSS_NORMALIZATIONS
from hybrid_tfrs.encoders import check_item_ids
from hybrid_tfrs.layers.seen_item_bias import SeenItemBias, seen_in_history
from hybrid_tfrs.topk import DEFAULT_CHUNK_SIZE, chunked_top_k

if LEGACY_KERAS:
    raise ImportError(
        "hybrid_tfrs.retrieval is the Keras 3 model; with TF_USE_LEGACY_KERAS=1 use "
        "hybrid_tfrs.tfrs_model.TFRSRetrievalModel instead"
    )


def last_position(item_ids):
    """Index of the last non-padded position of each row: [B] int32 (0 if empty)."""
    lengths = ops.sum(ops.cast(ops.not_equal(item_ids, 0), "int32"), axis=1)
    return ops.maximum(lengths - 1, 0)


@keras.saving.register_keras_serializable(package="hybrid_tfrs")
class SequentialRetrievalModel(keras.Model):
    """Retrieval model over a ``SequenceEncoder``.

    Args:
        encoder: a ``SequenceEncoder`` (see ``build_encoder``).
        loss: ``"softmax"`` (full cross-entropy, default), ``"sampled_softmax"``
            or ``"bce"`` (one sampled negative).
        num_negatives, sampler, logq_correction, remove_accidental_hits:
            sampled-softmax settings (see ``hybrid_tfrs.losses``).
        seed: seed of the negative samplers.
        loss_normalization: ``"batch"`` (default): the mean over each batch's
            targets; ``"target"``: the targets' sum / ``targets_per_batch``, so
            every target weighs the same whatever batch it falls in.
        targets_per_batch: mean number of targets in a (global) training
            batch, needed to train under ``loss_normalization="target"`` (a
            model built only to score may leave it out).
        branch_loss_weight: hybrid only; w > 0 trains each branch's output as
            a query of its own too: loss = L(blend) + w * (L(h_linrec) +
            L(h_fmlp)). A gate near 0 or 1 otherwise leaves one branch almost
            without gradient.
        seen_item_bias: add one learned scalar to the score of every item
            the history already holds (``SeenItemBias``), in training and
            in every scoring path (``score_items``, ``recommend``, the
            evaluation's ``score_function``, the SavedModel export).

    ``fit`` takes ``(item_ids [B, L], targets [B, L])`` with ``targets[b, t]`` the
    item after ``item_ids[b, t]`` (0 = no loss). With ``branch_loss_weight`` the
    training call returns ``{"hidden", "linrec", "fmlp"}`` ([B, L, d] each) for
    ``compute_loss``; inference calls return the blend [B, L, d] as always.
    """

    def __init__(
        self,
        encoder,
        loss="softmax",
        num_negatives=256,
        sampler="mixed",
        logq_correction=True,
        remove_accidental_hits=True,
        seed=None,
        loss_normalization="batch",
        targets_per_batch=None,
        branch_loss_weight=0.0,
        seen_item_bias=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if loss not in losses.LOSSES:
            raise ValueError(f"loss must be one of {losses.LOSSES}, got {loss!r}")
        if sampler not in losses.NEGATIVE_SAMPLERS:
            raise ValueError(f"sampler must be one of {losses.NEGATIVE_SAMPLERS}, got {sampler!r}")
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(
                f"loss_normalization must be one of {LOSS_NORMALIZATIONS}, "
                f"got {loss_normalization!r}"
            )
        if targets_per_batch is not None and not targets_per_batch > 0:
            raise ValueError(f"targets_per_batch must be > 0, got {targets_per_batch!r}")
        if branch_loss_weight < 0:
            raise ValueError(f"branch_loss_weight must be >= 0, got {branch_loss_weight}")
        if branch_loss_weight and encoder.kind != "hybrid":
            raise ValueError(
                f"branch_loss_weight needs a hybrid encoder (a {encoder.kind} encoder has one "
                "branch)"
            )
        if branch_loss_weight and encoder.layer_fusion:
            raise ValueError(
                "branch_loss_weight needs branch outputs; an encoder with fusion='layer' "
                "blends inside each layer and has none"
            )
        self.encoder = encoder
        self.branch_loss_weight = float(branch_loss_weight)
        self.seen_bias = (
            SeenItemBias(name="seen_item_bias", dtype="float32") if seen_item_bias else None
        )
        self.loss_name = loss
        self.num_negatives = num_negatives
        self.sampler = sampler
        self.logq_correction = logq_correction
        self.remove_accidental_hits = remove_accidental_hits
        self.seed = seed
        self.loss_normalization = loss_normalization
        self.targets_per_batch = None if targets_per_batch is None else float(targets_per_batch)
        self.seed_generator = random.SeedGenerator(seed)
        if encoder.built:
            self.build((None, encoder.max_len))

    def build(self, input_shape):
        if not self.encoder.built:
            self.encoder.build(input_shape)
        super().build(input_shape)

    @property
    def num_items(self):
        return self.encoder.num_items

    @property
    def max_len(self):
        return self.encoder.max_len

    @property
    def seen_item_bias(self):
        """The learned offset of already-seen items (float), or None without one."""
        if self.seen_bias is None:
            return None
        return float(ops.convert_to_numpy(self.seen_bias.bias))

    def set_item_popularity(self, counts):
        """Training item counts [num_items + 1] (the hybrid's gate reads them)."""
        self.encoder.set_item_popularity(counts)

    def call(self, item_ids, training=None):
        if training and self.branch_loss_weight:
            branches = self.encoder(item_ids, training=training, return_branches=True)
            return {name: branches[name] for name in ("hidden", "linrec", "fmlp")}
        return self.encoder(item_ids, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        normalizer = self.targets_per_batch if self.loss_normalization == "target" else None
        if self.loss_normalization == "target" and normalizer is None:
            raise ValueError(
                "loss_normalization='target' needs targets_per_batch (the mean number of "
                "targets in a training batch) to train; pass it, or loss_normalization='batch'"
            )
        if isinstance(y_pred, dict):
            loss = self._query_loss(y_pred["hidden"], y, normalizer, x)
            for branch in ("linrec", "fmlp"):
                loss = loss + self.branch_loss_weight * self._query_loss(
                    y_pred[branch], y, normalizer, x
                )
        else:
            loss = self._query_loss(y_pred, y, normalizer, x)
        # A per-replica sum over a global normalizer already adds up right.
        return loss if normalizer is not None else scale_loss_for_distribution(loss)

    def _query_loss(self, queries, targets, normalizer, item_ids):
        """The configured loss of query vectors [B, L, d] against next items [B, L]
        (``item_ids`` [B, L]: the inputs, for the seen-item offset)."""
        # Scored in float32 whatever the dtype policy: under mixed precision the
        # encoder's outputs are float16, and a softmax over the catalogue needs
        # float32's range (Keras scales the loss for the float16 gradients). The
        # table is a float32 weight, and the seen-item offset a float32 layer.
        queries = ops.cast(queries, "float32")
        table = self.encoder.item_embeddings
        seen = dict(item_ids=item_ids, seen_bias=self.seen_bias)
        if self.loss_name == "softmax":
            return losses.full_softmax_loss(queries, table, targets, normalizer=normalizer, **seen)
        if self.loss_name == "bce":
            return losses.bce_loss(
                queries, table, targets, seed=self.seed_generator, normalizer=normalizer, **seen
            )
        return losses.sampled_softmax_loss(
            queries,
            table,
            targets,
            num_negatives=self.num_negatives,
            sampler=self.sampler,
            logq_correction=self.logq_correction,
            remove_accidental_hits=self.remove_accidental_hits,
            seed=self.seed_generator,
            normalizer=normalizer,
            **seen,
        )

    def query_embedding(self, item_ids, return_alpha=False):
        """Query vector at each row's last item: float32 [B, d] (and alpha [B] or None)."""
        hidden, alpha = self.encoder(item_ids, training=False, return_alpha=True)
        last = last_position(item_ids)
        # float32 whatever the dtype policy, as the item table is: the catalogue
        # is scored in float32 (float16 scores would tie and round near items).
        query = ops.cast(
            ops.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0, :], "float32"
        )
        if alpha is not None:
            alpha = ops.cast(ops.take_along_axis(alpha, last[:, None], axis=1)[:, 0], "float32")
        return (query, alpha) if return_alpha else query

    def score_items(self, item_ids, exclude_history=False, return_alpha=False):
        """Scores of every item for each history: [B, N + 1], column 0 = -inf.

        With ``exclude_history`` the items in the history also get -inf; with
        a seen-item bias they get the learned offset otherwise.
        """
        query, alpha = self.query_embedding(item_ids, return_alpha=True)
        scores = ops.matmul(query, ops.transpose(self.encoder.item_embeddings))
        blocked = ops.equal(ops.arange(self.num_items + 1), 0)[None, :]  # padding column
        if self.seen_bias is not None or exclude_history:
            seen = seen_in_history(item_ids, self.num_items + 1)
            if self.seen_bias is not None:
                scores = self.seen_bias(scores, seen)
            if exclude_history:
                blocked = ops.logical_or(blocked, seen > 0)
        scores = ops.where(blocked, -np.inf, scores)
        return (scores, alpha) if return_alpha else scores

    def recommend(self, item_ids, k=10, exclude_history=False, chunk_size=DEFAULT_CHUNK_SIZE):
        """Top-k items for a batch of histories, the item table scored in chunks.

        Args:
            item_ids: [B, L] int ids (0 = padding, left-aligned); L <= max_len.
            k: number of items, 1..num_items.
            exclude_history: leave the history's items out (slots beyond the
                unseen items score -inf).
            chunk_size: items scored at a time; memory O(B x (k + chunk_size))
                (see hybrid_tfrs.topk).

        Returns:
            (ids [B, k] int32, scores [B, k] float), best first; ties keep the
            lower item index first.
        """
        ids = check_item_ids(item_ids, self.num_items)
        if ids.shape[1] > self.max_len:
            raise ValueError(f"item_ids: length {ids.shape[1]} exceeds max_len={self.max_len}")
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k must be in 1..{self.num_items}, got {k}")
        rows, positions = np.nonzero(ids)
        history_pairs = (rows.astype("int32"), ids[rows, positions])
        return chunked_top_k(
            self.query_embedding(ids),
            self.encoder.item_embeddings,
            k,
            chunk_size=chunk_size,
            excluded=history_pairs if exclude_history else None,
            offset=None if self.seen_bias is None else (*history_pairs, self.seen_bias.bias),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            loss=self.loss_name,
            num_negatives=self.num_negatives,
            sampler=self.sampler,
            logq_correction=self.logq_correction,
            remove_accidental_hits=self.remove_accidental_hits,
            seed=self.seed,
            loss_normalization=self.loss_normalization,
            targets_per_batch=self.targets_per_batch,
            branch_loss_weight=self.branch_loss_weight,
            seen_item_bias=self.seen_bias is not None,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
