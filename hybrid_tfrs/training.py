"""Training and evaluation runs: data -> model -> best checkpoint -> metrics.json.

``hybrid-tfrs-train`` (hybrid_tfrs.cli.train) is the command-line face of
:func:`train`; benchmarks call it too. Output directory layout::

    config.json          the run's settings (what hybrid-tfrs-evaluate rebuilds from)
    vocabulary.txt       raw item id of index i on line i
    model.keras          the best model on validation NDCG@10 (full ranking)
    checkpoints/         last-<epoch>.keras + state.json, to resume an interrupted run
    tensorboard/         TensorBoard logs (loss, validation metrics, epoch time)
    metrics.json         valid and test metrics under the three protocols
    test_ranks.npz       each test user's target rank per protocol, for paired tests
                         (hybrid_tfrs.significance)
    report.html          validation curve, metrics and gate alpha by history length

A run resumes only with the same settings, and every file is replaced
atomically (see hybrid_tfrs.run_dir). With ``export_dir`` set, the best model
is also exported for TensorFlow Serving to ``<export_dir>/<model kind>/<version>/``
(see hybrid_tfrs.export).
"""

import contextlib
import os
import time

import keras
import numpy as np

from hybrid_tfrs import distribution, run_dir
from hybrid_tfrs.config import PROTOCOLS, TrainConfig  # noqa: F401  (TrainConfig re-exported)
from hybrid_tfrs.data.pipeline import last_position_dataset, skip_epochs, training_dataset
from hybrid_tfrs.data.prepared import PreparedSplit
from hybrid_tfrs.evaluation import evaluate_batches, format_table, target_ranks
from hybrid_tfrs.random_state import restore_seed_states, seed_states
from hybrid_tfrs.report import write_report
from hybrid_tfrs.run_data import (
    check_sampled_protocols,
    data_summary,
    load_split,
)
from hybrid_tfrs.run_model import (
    build_model,
    compile_model,
    evaluate_in_memory,
    item_embeddings,
    score_function,
    split_inputs,
)
from hybrid_tfrs.significance import write_ranks

VALIDATION_METRIC = "NDCG@10"
SEED_STATES_KEY = "seed_states"  # in the state file: the random streams' states (to resume)


def evaluate_split(
    model, split, part, max_len, protocols=PROTOCOLS, batch_size=256, score_fn=None, **kwargs
):
    """Evaluates ``part`` ("valid" or "test") of a leave-one-out split.

    A :class:`PreparedSplit` (--prepared_dir) streams its users from the shards,
    ``batch_size`` at a time; a :class:`Split` is evaluated from memory. Both
    give the same metrics for the same users in the same order. ``score_fn``:
    ``score_function(model)`` kept by a caller that evaluates the model again,
    so that its graphs are traced once (default: a new one).
    """
    score_fn = score_fn or score_function(model)
    if isinstance(split, PreparedSplit):
        from hybrid_tfrs.data.prepared_pipeline import streamed_eval_dataset

        batches = streamed_eval_dataset(split.prepared, part, max_len, batch_size)
        return evaluate_batches(
            score_fn,
            batches.as_numpy_iterator(),
            split.num_items,
            split.item_popularity,
            protocols=protocols,
            batch_size=batch_size,
            num_users=split.num_users,
            item_embeddings=item_embeddings(model),
            **kwargs,
        )
    return evaluate_in_memory(
        model, split, part, max_len, protocols, batch_size, score_fn, **kwargs
    )


def validate(model, split, config, score_fn):
    """The pass made after every epoch: ``config.validation_protocol``'s metrics of
    ``split``'s validation users (the ``evaluate_split`` dict), ``score_fn`` from
    ``score_function(model)``."""
    return evaluate_split(
        model,
        split,
        "valid",
        config.max_len,
        protocols=(config.validation_protocol,),
        batch_size=config.eval_batch_size,
        score_fn=score_fn,
        progress=False,
    )


def split_ranks(model, split, part, max_len, protocols=PROTOCOLS, **kwargs):
    """Every user's target rank and gate alpha on ``part`` of an in-memory split.

    Returns:
      ({protocol: int64 [U]}, alpha float64 [U] or None), users in ``split.user_ids`` order.
    """
    return target_ranks(**split_inputs(model, split, part, max_len), protocols=protocols, **kwargs)


def load_run_model(path, way_out=run_dir.START_OVER):
    """A run's saved model; RunDirError naming the file and ``way_out`` if missing or broken."""
    if not os.path.isfile(path):
        raise run_dir.RunDirError(f"{path}: no such file; {way_out}")
    try:
        return keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001  (any failure means: the file is unusable)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise run_dir.RunDirError(
            f"{path}: cannot be loaded ({type(error).__name__}: {reason}); {way_out}"
        ) from None


class ValidationCallback(keras.callbacks.Callback):
    """Full-ranking validation NDCG@10 (``--validation_protocol``) after each epoch; keeps
    the best model.

    Saves the best model and the last one plus a small state file (to resume),
    each atomically, logs one summary line per epoch, and stops once more than
    ``patience`` epochs in a row bring no improvement or when the time budget is spent.
    """

    def __init__(self, split, config, state, log, writes_files=True):
        super().__init__()
        self.split = split
        self.config = config
        self.state = state
        self.log = log
        self.writes_files = writes_files  # False on the workers other than the chief
        self.epoch_started = None

    def set_model(self, model):
        super().set_model(model)
        self.score_fn = score_function(model)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.epoch_started
        result = validate(self.model, self.split, self.config, self.score_fn)
        validation_seconds = time.perf_counter() - self.epoch_started - seconds
        score = result["protocols"][self.config.validation_protocol][VALIDATION_METRIC]
        alpha = result["alpha"]  # the hybrid's mean gate on the validation users, else None
        loss = float(logs["loss"]) if logs and "loss" in logs else None
        if logs is not None:
            logs["val_ndcg@10"] = score
            logs["epoch_seconds"] = seconds
            if alpha is not None:
                logs["val_alpha"] = alpha
        self.state["elapsed_seconds"] = self.state.get("elapsed_seconds", 0.0) + seconds
        self.state["history"].append(
            {
                "epoch": epoch + 1,
                "val_ndcg@10": score,
                "epoch_seconds": seconds,
                "validation_seconds": validation_seconds,
                "loss": loss,
                "elapsed_seconds": self.state["elapsed_seconds"],
                "val_alpha": alpha,
            }
        )
        improved = score > self.state["best_score"]
        if improved:
            self.state.update(best_score=score, best_epoch=epoch + 1, waited=0)
        else:
            self.state["waited"] += 1
        self.state["epochs_done"] = epoch + 1
        self.state[SEED_STATES_KEY] = seed_states(self.model)
        if self.writes_files:
            if improved:
                run_dir.save_model(
                    self.model, run_dir.run_path(self.config, run_dir.BEST_MODEL_FILE)
                )
            run_dir.save_checkpoint(self.model, self.config, self.state)
        self.log(
            f"epoch {epoch + 1}/{self.config.epochs} - loss {loss:.4f} - val "
            f"{_validation_name(self.config)} "
            f"{score:.4f} (best {self.state['best_score']:.4f} at epoch "
            f"{self.state['best_epoch']}) - {seconds + validation_seconds:.1f}s "
            f"({validation_seconds:.1f}s validation)"
            + ("" if alpha is None else f" - alpha {alpha:.3g}")
        )
        stop = run_dir.stop_reason(self.state, self.config)
        if stop:
            self.log(f"stopping: {stop[1]}")
            self.model.stop_training = True


def _resume_random_streams(model, dataset, state, log):
    """Puts a resumed run's dropout streams and shuffle where an uninterrupted one's
    would be after ``state["epochs_done"]`` epochs, so the two train alike."""
    skip_epochs(dataset, state["epochs_done"])
    if SEED_STATES_KEY in state:
        restore_seed_states(model, state[SEED_STATES_KEY])
    else:  # a state file written before the streams were saved
        log("the state file has no dropout stream states: dropout restarts its masks")


def _validation_name(config):
    """``NDCG@10`` under the default ``full`` protocol, else prefixed by the protocol."""
    if config.validation_protocol == "full":
        return VALIDATION_METRIC
    return f"{config.validation_protocol} {VALIDATION_METRIC}"


def stopped_by(state, config):
    """What ended a finished run: ``"patience"``, ``"time budget"`` or ``"epochs"`` (the cap)."""
    stop = run_dir.stop_reason(state, config)
    return stop[0] if stop else "epochs"


def training_data(config, data, split):
    """The epoch's batches, the number of batches and the mean number of targets in one.

    With --prepared_dir the batches stream from the shards (``data`` is a
    PreparedData, ``split`` a PreparedSplit).
    """
    if config.prepared_dir:
        from hybrid_tfrs.data.prepared_pipeline import streamed_training_dataset

        dataset, num_targets = streamed_training_dataset(
            data,
            split.train_lengths,
            config.max_len,
            config.batch_size,
            seed=config.seed,
            bucket_by_length=config.bucket_by_length,
            window_stride=config.window_stride,
            causal=config.causal,
            shuffle_buffer=config.shuffle_buffer,
            bucket_widths=config.bucket_width_list,
        )
    elif config.causal:
        dataset = training_dataset(
            split.train,
            config.max_len,
            config.batch_size,
            seed=config.seed,
            bucket_by_length=config.bucket_by_length,
            window_stride=config.window_stride,
            bucket_widths=config.bucket_width_list,
        )
        # Each target once; without windows only a history's latest max_len.
        cap = None if config.window_stride else config.max_len
        num_targets = sum(min(max(len(s) - 1, 0), cap or len(s)) for s in split.train)
    else:
        # Bidirectional encoders would see later targets: one example per prefix.
        dataset = last_position_dataset(
            split.train, config.max_len, config.batch_size, seed=config.seed
        )
        num_targets = sum(max(len(sequence) - 1, 0) for sequence in split.train)
    steps = int(dataset.cardinality())
    return dataset, steps, num_targets / steps


def train(config, log=print, dataset=None, callbacks=(), eval_progress=False, strategy=None):
    """Runs a whole training job and returns the metrics dict (see module doc).

    ``dataset``: ``load_split(config)`` if the caller has loaded it already;
    ``callbacks`` join ``fit`` (e.g. a terminal progress bar); ``eval_progress``
    shows a progress bar during the final evaluation; ``strategy``: the run's
    ``tf.distribute`` strategy if the caller made it (a multi-worker one must
    exist before TensorFlow runs any op, e.g. reading prepared shards). Bad
    settings, data or output folder raise ValueError (DataError, RunDirError)
    before anything is written.
    """
    config.validate()
    state = run_dir.check_run_dir(config)  # settings and folder, before anything is loaded
    strategy = strategy or distribution.run_strategy(config, state, log)
    if strategy is None:
        log(run_dir.WORKER_DONE)
        return None
    distribution.check_settings(config, strategy)
    data, split = dataset or load_split(config)
    check_sampled_protocols(config, split)
    stats = split.stats()
    log(
        f"{config.dataset}: {stats['users']} users, {stats['items']} items, "
        f"{stats['interactions']} interactions (mean length {stats['mean_length']:.1f}), "
        f"{stats['skipped_users']} users skipped"
    )
    chief = distribution.is_chief(strategy)  # the only process that writes files
    # One training a folder: a second one (a rerun while the first still runs)
    # would overwrite its checkpoints; it stops here with RunDirError instead.
    with run_dir.exclusive(config.output_dir) if chief else contextlib.nullcontext():
        return _fit_and_evaluate(
            config, log, data, split, stats, strategy, chief, callbacks, eval_progress
        )


def _fit_and_evaluate(config, log, data, split, stats, strategy, chief, callbacks, eval_progress):
    """The body of :func:`train` once the run's folder is its own: resumes from
    the state found there (read under the lock, so never one a finishing run
    is still writing) or starts afresh, trains, then, on the chief, evaluates
    and writes (``stats``: ``split.stats()``)."""
    state = run_dir.check_run_dir(config)
    summary = data_summary(data.vocabulary, split, stats)
    run_dir.check_same_data(config, state, summary, data.vocabulary)
    # Seeded first: the shuffle's order depends on the global seed too, so a run
    # is the same whatever the process ran before it.
    keras.utils.set_random_seed(config.seed)
    dataset, steps_per_epoch, targets_per_batch = training_data(config, data, split)
    with strategy.scope():
        if state is None:
            state = {"best_score": -1.0, "best_epoch": 0, "waited": 0, "epochs_done": 0}
            state["history"] = []
            state["data"] = summary
            model = build_model(config, split.num_items, split.item_popularity, targets_per_batch)
            compile_model(model, config, steps_per_epoch)
        else:
            model = load_run_model(run_dir.last_model_path(config, state))
            state["data"] = summary  # kept from here on by a state written before
            _resume_random_streams(model, dataset, state, log)
            log(f"resuming after epoch {state['epochs_done']} from {config.output_dir}")
        # A loaded optimizer is built; built again, a LossScaleOptimizer adds a second scale.
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    if chief:
        run_dir.start_run_dir(config)
        run_dir.write_json(run_dir.run_path(config, run_dir.CONFIG_FILE), config.to_json())
        run_dir.save_vocabulary(data.vocabulary, run_dir.run_path(config, run_dir.VOCABULARY_FILE))
    replicas = strategy.num_replicas_in_sync
    log(
        f"{config.model} encoder: {model.encoder.count_params():,} parameters"
        + (
            f"; {replicas} replicas, {config.batch_size // replicas} rows each"
            if replicas > 1
            else ""
        )
    )

    if not run_dir.training_done(state, config):
        fit_callbacks = [*callbacks, ValidationCallback(split, config, state, log, chief)]
        if chief:
            tensorboard = run_dir.run_path(config, run_dir.TENSORBOARD_DIR)
            fit_callbacks.append(keras.callbacks.TensorBoard(tensorboard))
        if distribution.is_multi_worker(strategy):
            distribution.multi_worker_fit(
                model, dataset, config.epochs, state["epochs_done"], fit_callbacks, strategy
            )
        else:
            # One iterator for the whole fit, so each epoch is the next order of
            # the shuffle whatever iterators Keras makes (see skip_epochs).
            model.fit(
                dataset.repeat(),
                steps_per_epoch=steps_per_epoch,
                epochs=config.epochs,
                initial_epoch=state["epochs_done"],
                callbacks=fit_callbacks,
                shuffle=False,  # the tf.data pipeline shuffles
                verbose=0,  # one summary line per epoch comes from ValidationCallback
            )
    if not chief:
        log(run_dir.WORKER_DONE)
        return None

    best = load_run_model(run_dir.run_path(config, run_dir.BEST_MODEL_FILE))
    kwargs = dict(
        batch_size=config.eval_batch_size,
        seed=config.seed,
        protocols=config.protocol_list,
        progress=eval_progress,
        score_fn=score_function(best),
    )
    valid = evaluate_split(best, split, "valid", config.max_len, **kwargs)
    test = evaluate_split(best, split, "test", config.max_len, return_ranks=True, **kwargs)
    epoch_seconds = [row["epoch_seconds"] for row in state["history"]]
    metrics = {
        "dataset": config.dataset,
        "model": config.model,
        "config": config.to_json(),
        "data_stats": stats,
        "valid": valid["protocols"],
        "test": test["protocols"],
        "test_buckets": test["buckets"],
        "test_alpha": test["alpha"],
        "best_epoch": state["best_epoch"],
        "epochs_trained": state["epochs_done"],
        "stopped_by": stopped_by(state, config),
        "mean_epoch_seconds": float(np.mean(epoch_seconds)) if epoch_seconds else None,
        # Robust to a paused or crowded epoch, whose wall clock counts the pause.
        "median_epoch_seconds": float(np.median(epoch_seconds)) if epoch_seconds else None,
        "train_minutes": state.get("elapsed_seconds", 0.0) / 60.0,
        "history": state["history"],
        "parameters": int(best.encoder.count_params()),
    }
    # The ranks first: a run with metrics.json (finished) has its ranks too.
    write_ranks(
        run_dir.run_path(config, run_dir.TEST_RANKS_FILE), test["ranks"], split.user_ids, "test"
    )
    metrics_path = run_dir.run_path(config, run_dir.METRICS_FILE)
    run_dir.write_json(metrics_path, metrics)
    log(f"\nTest metrics of the best model (epoch {state['best_epoch']}):")
    log(format_table(test["protocols"]))
    log(f"wrote {metrics_path}")
    log(f"wrote {write_report(config.output_dir)} (open it in a browser)")
    if config.export_dir:
        from hybrid_tfrs.export import export_run, newest_version  # TensorFlow-only

        before = newest_version(os.path.join(config.export_dir, config.model))
        exported = export_run(
            config.output_dir, config.export_dir, top_k=config.top_k, unless_exported=True
        )
        if exported == before:  # a rerun of a finished run: the servers have it
            log(f"already exported as {exported} (this run, the same settings)")
        else:
            log(f"exported {exported}")
    return metrics


if __name__ == "__main__":
    raise SystemExit(
        "hybrid_tfrs.training is a library module; train with `hybrid-tfrs-train` "
        "or `python -m hybrid_tfrs.cli.train` (--help lists the flags)"
    )
