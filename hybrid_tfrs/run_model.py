"""The model a run's settings describe: built, compiled, and scored for evaluation.

Backend-neutral (no TensorFlow import): :mod:`hybrid_tfrs.training` uses these
with its tf.data pipeline, and ``benchmarks/jax_backend.py`` on the JAX backend.
"""

import keras
import numpy as np

from hybrid_tfrs.config import PROTOCOLS
from hybrid_tfrs.data.examples import batch_widths, length_buckets, pad_latest
from hybrid_tfrs.encoders import build_encoder
from hybrid_tfrs.evaluation import evaluate
from hybrid_tfrs.optimization import make_optimizer
from hybrid_tfrs.retrieval import SequentialRetrievalModel


def build_model(config, num_items, item_popularity, targets_per_batch=None):
    """The retrieval model of a run, popularity counts set.

    ``targets_per_batch`` (mean targets in a training batch) is needed by
    ``--loss_normalization=target``. Every layer computes under the run's
    ``dtype_policy`` (a mixed one: ``compile`` then scales the loss for float16).
    """
    model = SequentialRetrievalModel(
        config_encoder(config, num_items),
        loss=config.loss,
        num_negatives=config.num_negatives,
        sampler=config.sampler,
        seed=config.seed,
        loss_normalization=config.loss_normalization,
        targets_per_batch=targets_per_batch if config.loss_normalization == "target" else None,
        branch_loss_weight=config.branch_loss_weight,
        seen_item_bias=config.seen_item_bias,
        dtype=config.dtype_policy,
    )
    model.set_item_popularity(item_popularity)
    return model


def config_encoder(config, num_items):
    """The ``SequenceEncoder`` a run's TrainConfig describes, for ``num_items`` items."""
    return build_encoder(
        config.model,
        num_items=num_items,
        max_len=config.max_len,
        hidden_dim=config.hidden_dim,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        dropout_rate=config.dropout,
        causal=config.causal,
        chunk_size=config.chunk_size,
        gate_mode=config.gate_mode,
        gate_features=config.gate_feature_list,
        gate_output=config.gate_output,
        fusion=config.fusion,
        share_ffn=config.share_ffn,
        shared_blocks=config.shared_blocks,
        normalize_first=config.normalize_first,
        dtype=config.dtype_policy,
    )


def compile_model(model, config, steps_per_epoch=1):
    """Adam(W) with the run's learning-rate schedule and clipping (hybrid_tfrs.optimization)."""
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    decay_epochs = config.decay_epochs or config.epochs
    optimizer = make_optimizer(
        config.learning_rate,
        weight_decay=config.weight_decay,
        schedule=config.lr_schedule,
        warmup_steps=warmup_steps,
        decay_steps=max(round(decay_epochs * steps_per_epoch) - warmup_steps, 1),
        final_ratio=config.final_lr_ratio,
        clipnorm=config.clipnorm,
    )
    model.compile(optimizer=optimizer)


def score_function(model):
    """``score_fn`` for :func:`hybrid_tfrs.evaluation.evaluate` from a model.

    Returns the query vectors [B, d] (and the gate alpha [B], the learned
    seen-item offset); pass
    ``item_embeddings(model)`` to ``evaluate`` to score them chunk by chunk.
    On the TensorFlow backend the encoder runs as a graph traced once per width
    (any batch size), and a causal encoder reads each history cut to the
    smallest of ``batch_widths(L)`` that holds it, as in training: right
    padding cannot change a causal output, so short histories cost a fraction
    of the width. On JAX, XLA compiles one program per shape, so every history
    keeps the full width (one program per batch size).
    """
    queries = _query_function(model)
    bucketed = model.encoder.causal and keras.backend.backend() == "tensorflow"

    def score(histories):
        histories = np.asarray(histories, dtype=np.int32)
        width = histories.shape[1]
        widths = batch_widths(width) if bucketed else [width]
        buckets = length_buckets(histories, widths)
        result = {"query": np.empty((len(histories), model.encoder.hidden_dim), np.float32)}
        if model.seen_item_bias is not None:
            result["seen_bias"] = model.seen_item_bias
        if model.encoder.gate is not None:
            result["alpha"] = np.empty(len(histories), np.float32)
        for bucket in np.unique(buckets):
            rows = np.flatnonzero(buckets == bucket)
            query, alpha = queries(histories[rows, : widths[bucket]])
            result["query"][rows] = keras.ops.convert_to_numpy(query)
            if alpha is not None:
                result["alpha"][rows] = keras.ops.convert_to_numpy(alpha)
        return result

    return score


def _query_function(model):
    """histories int32 [B, W] -> (query [B, d], alpha [B] or None), compiled for the backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        traced = {}  # width -> the graph traced for it (any batch size)

        def queries(histories):
            width = histories.shape[1]
            if width not in traced:
                traced[width] = tf.function(
                    lambda rows: model.query_embedding(rows, return_alpha=True),
                    input_signature=[tf.TensorSpec([None, width], tf.int32)],
                )
            return traced[width](histories)

        return queries
    if backend == "jax":
        import jax

        variables = model.variables

        def stateless(values, histories):  # the model's variables read from ``values``
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return model.query_embedding(histories, return_alpha=True)

        compiled = jax.jit(stateless)
        return lambda histories: compiled([v.value for v in variables], histories)
    return lambda histories: model.query_embedding(histories, return_alpha=True)


def item_embeddings(model):
    """The model's item table as numpy, float [N + 1, d] (row 0 is padding)."""
    return keras.ops.convert_to_numpy(model.encoder.item_embeddings)


def split_inputs(model, split, part, max_len, score_fn=None):
    """The arguments of :func:`hybrid_tfrs.evaluation.evaluate` (and ``target_ranks``) that
    describe ``part`` ("valid" or "test") of an in-memory Split, histories padded to
    ``max_len``; ``score_fn``: ``score_function(model)`` if not given."""
    histories = split.valid_histories if part == "valid" else split.test_histories
    targets = split.valid_targets if part == "valid" else split.test_targets
    return dict(
        score_fn=score_fn or score_function(model),
        histories=pad_latest(histories, max_len),
        targets=np.asarray(targets),
        user_items=split.user_items,
        num_items=split.num_items,
        item_popularity=split.item_popularity,
        seen_items=histories,
        item_embeddings=item_embeddings(model),
    )


def evaluate_in_memory(
    model, split, part, max_len, protocols=PROTOCOLS, batch_size=256, score_fn=None, **kwargs
):
    """:func:`hybrid_tfrs.evaluation.evaluate` of ``part`` ("valid" or "test") of an
    in-memory Split, with its metrics by history length; ``kwargs`` go to ``evaluate``."""
    histories = split.valid_histories if part == "valid" else split.test_histories
    return evaluate(
        **split_inputs(model, split, part, max_len, score_fn),
        protocols=protocols,
        batch_size=batch_size,
        history_lengths=np.array([len(h) for h in histories]),
        **kwargs,
    )
