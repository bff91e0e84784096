"""Training and evaluation runs: data -> model -> best checkpoint -> metrics.json.

``trainers/train.py`` is the command-line face of :func:`train`; benchmarks call
it directly. Output directory layout::

    config.json          the run's settings (what evaluate.py rebuilds from)
    vocabulary.txt       raw item id of index i on line i
    model.keras          the best model on validation NDCG@10 (full ranking)
    checkpoints/         last.keras + state.json, to resume an interrupted run
    tensorboard/         TensorBoard logs (loss, validation metrics, epoch time)
    metrics.json         valid and test metrics under the three protocols

With ``export_dir`` set, the best model is also exported for TensorFlow
Serving to ``<export_dir>/<model kind>/<version>/`` (see hybrid_tfrs.export).
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np

from hybrid_tfrs.data import load_dataset, pad_latest
from hybrid_tfrs.data.pipeline import last_position_dataset, training_dataset
from hybrid_tfrs.encoders import ENCODER_KINDS, GATE_MODES, build_encoder
from hybrid_tfrs.evaluation import NUM_NEGATIVES, PROTOCOLS, evaluate, format_table
from hybrid_tfrs.losses import LOSSES, NEGATIVE_SAMPLERS
from hybrid_tfrs.retrieval import SequentialRetrievalModel

VALIDATION_METRIC = "NDCG@10"


@dataclasses.dataclass
class TrainConfig:
    """Settings of one run; each field is a flag of ``trainers/train.py``."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    model: str = "hybrid"
    max_len: int = 50
    hidden_dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    causal: bool = True
    chunk_size: int = 64
    gate_mode: str = "statistics"
    loss: str = "softmax"
    num_negatives: int = 256
    sampler: str = "mixed"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 20
    patience: int = 5
    max_train_minutes: float = 0.0
    seed: int = 0
    min_length: int = 3
    synthetic_users: int = 2000
    synthetic_items: int = 400
    eval_batch_size: int = 512
    bucket_by_length: bool = True
    window_stride: int = 0
    protocols: str = ",".join(PROTOCOLS)
    output_dir: str = "runs/synthetic_hybrid"
    resume: bool = True
    export_dir: str | None = None
    top_k: int = 100

    def validate(self):
        """Raises ValueError naming the flag for an impossible setting."""
        checks = [
            (self.model in ENCODER_KINDS, "model", f"must be one of {ENCODER_KINDS}"),
            (self.loss in LOSSES, "loss", f"must be one of {LOSSES}"),
            (self.sampler in NEGATIVE_SAMPLERS, "sampler", f"must be one of {NEGATIVE_SAMPLERS}"),
            (self.gate_mode in GATE_MODES, "gate_mode", f"must be one of {GATE_MODES}"),
            (self.max_len >= 1, "max_len", "must be >= 1"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1"),
            (self.epochs >= 1, "epochs", "must be >= 1"),
            (self.patience >= 0, "patience", "must be >= 0"),
            (self.max_train_minutes >= 0, "max_train_minutes", "must be >= 0 (0 = no limit)"),
            (self.learning_rate > 0, "learning_rate", "must be > 0"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (0 <= self.dropout < 1, "dropout", "must be in [0, 1)"),
            (self.num_negatives >= 1, "num_negatives", "must be >= 1"),
            (self.top_k >= 1, "top_k", "must be >= 1"),
            (
                0 <= self.window_stride <= self.max_len,
                "window_stride",
                f"must be in 0..max_len={self.max_len} (0 = latest max_len targets only)",
            ),
            (self.min_length >= 3, "min_length", "must be >= 3 (train, valid and test items)"),
        ]
        unknown = set(self.protocol_list) - set(PROTOCOLS)
        checks.append((not unknown, "protocols", f"unknown {sorted(unknown)}; use {PROTOCOLS}"))
        for ok, flag, message in checks:
            if not ok:
                raise ValueError(f"--{flag}={getattr(self, flag)!r}: {message}")

    @property
    def protocol_list(self):
        return tuple(p.strip() for p in self.protocols.split(",") if p.strip())

    def to_json(self):
        return dataclasses.asdict(self)


def load_split(config):
    """The run's dataset: (SequenceData, leave-one-out Split)."""
    synthetic = (
        dict(num_users=config.synthetic_users, num_items=config.synthetic_items, seed=config.seed)
        if config.dataset == "synthetic"
        else {}
    )
    return load_dataset(config.dataset, config.data_dir, min_length=config.min_length, **synthetic)


def build_model(config, num_items, item_popularity):
    """The retrieval model of a run, popularity counts set."""
    encoder = build_encoder(
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
    )
    model = SequentialRetrievalModel(
        encoder,
        loss=config.loss,
        num_negatives=config.num_negatives,
        sampler=config.sampler,
        seed=config.seed,
    )
    model.set_item_popularity(item_popularity)
    return model


def compile_model(model, config):
    optimizer = (
        keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
        if config.weight_decay
        else keras.optimizers.Adam(config.learning_rate)
    )
    model.compile(optimizer=optimizer)


def score_function(model, exclude_history=False):
    """``score_fn`` for :func:`hybrid_tfrs.evaluation.evaluate` from a model."""

    def score(histories):
        scores, alpha = model.score_items(
            histories, exclude_history=exclude_history, return_alpha=True
        )
        result = {"scores": keras.ops.convert_to_numpy(scores)}
        if alpha is not None:
            result["alpha"] = keras.ops.convert_to_numpy(alpha)
        return result

    return score


def evaluate_split(model, split, part, max_len, protocols=PROTOCOLS, **kwargs):
    """Evaluates ``part`` ("valid" or "test") of a leave-one-out split."""
    histories = split.valid_histories if part == "valid" else split.test_histories
    targets = split.valid_targets if part == "valid" else split.test_targets
    return evaluate(
        score_function(model),
        pad_latest(histories, max_len),
        np.asarray(targets),
        split.user_items,
        split.num_items,
        split.item_popularity,
        protocols=protocols,
        seen_items=histories,
        history_lengths=np.array([len(h) for h in histories]),
        **kwargs,
    )


class ValidationCallback(keras.callbacks.Callback):
    """Full-ranking validation NDCG@10 after each epoch; keeps the best model.

    Saves the best model to ``best_path``, the last one and a small state file
    to ``checkpoint_dir`` (to resume), and stops after ``patience`` epochs
    without improvement.
    """

    def __init__(self, split, config, best_path, checkpoint_dir, state):
        super().__init__()
        self.split = split
        self.config = config
        self.best_path = best_path
        self.checkpoint_dir = checkpoint_dir
        self.state = state
        self.epoch_started = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.epoch_started
        result = evaluate_split(
            self.model,
            self.split,
            "valid",
            self.config.max_len,
            protocols=("full",),
            batch_size=self.config.eval_batch_size,
            progress=False,
        )
        score = result["protocols"]["full"][VALIDATION_METRIC]
        if logs is not None:
            logs["val_ndcg@10"] = score
            logs["epoch_seconds"] = seconds
        self.state["elapsed_seconds"] = self.state.get("elapsed_seconds", 0.0) + seconds
        self.state["history"].append(
            {
                "epoch": epoch + 1,
                "val_ndcg@10": score,
                "epoch_seconds": seconds,
                "loss": float(logs["loss"]) if logs and "loss" in logs else None,
                "elapsed_seconds": self.state["elapsed_seconds"],
            }
        )
        improved = score > self.state["best_score"]
        if improved:
            self.state.update(best_score=score, best_epoch=epoch + 1, waited=0)
            self.model.save(self.best_path)
        else:
            self.state["waited"] += 1
        self.state["epochs_done"] = epoch + 1
        self.model.save(os.path.join(self.checkpoint_dir, "last.keras"))
        _write_json(os.path.join(self.checkpoint_dir, "state.json"), self.state)
        print(
            f" - val NDCG@10 {score:.4f} (best {self.state['best_score']:.4f} at epoch "
            f"{self.state['best_epoch']}) - {seconds:.1f}s",
            flush=True,
        )
        stop = _stop_reason(self.state, self.config)
        if stop:
            print(f"stopping: {stop}", flush=True)
            self.model.stop_training = True


def _stop_reason(state, config):
    """Why training should not go on (patience or time budget), or None."""
    if state["waited"] > config.patience:
        return f"no better validation NDCG@10 for {state['waited']} epochs"
    budget = config.max_train_minutes * 60.0
    if budget and state.get("elapsed_seconds", 0.0) >= budget:
        return f"training time budget of {config.max_train_minutes:g} minutes spent"
    return None


def _write_json(path, payload):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(tmp, path)


def _training_data(config, split):
    if config.causal:
        return training_dataset(
            split.train,
            config.max_len,
            config.batch_size,
            seed=config.seed,
            bucket_by_length=config.bucket_by_length,
            window_stride=config.window_stride,
        )
    # Bidirectional encoders would see later targets: one example per prefix.
    return last_position_dataset(split.train, config.max_len, config.batch_size, seed=config.seed)


def _check_sampled_protocols(config, split):
    """Fails before training if a sampled protocol cannot draw its negatives."""
    fewest_unseen = split.num_items - max(len(items) for items in split.user_items)
    for protocol, needed in NUM_NEGATIVES.items():
        if protocol in config.protocol_list and fewest_unseen < needed:
            raise ValueError(
                f"--protocols: {protocol} needs {needed} unseen items per user, but a user of "
                f"{config.dataset} has only {fewest_unseen}; drop it (e.g. --protocols=full)"
            )


def train(config, log=print):
    """Runs a whole training job and returns the metrics dict (see module doc)."""
    config.validate()
    keras.utils.set_random_seed(config.seed)
    data, split = load_split(config)
    stats = split.stats()
    _check_sampled_protocols(config, split)
    log(
        f"{config.dataset}: {stats['users']} users, {stats['items']} items, "
        f"{stats['interactions']} interactions (mean length {stats['mean_length']:.1f}), "
        f"{stats['skipped_users']} users skipped"
    )
    checkpoint_dir = os.path.join(config.output_dir, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    _write_json(os.path.join(config.output_dir, "config.json"), config.to_json())
    data.vocabulary.save(os.path.join(config.output_dir, "vocabulary.txt"))
    best_path = os.path.join(config.output_dir, "model.keras")
    state_path = os.path.join(checkpoint_dir, "state.json")

    state = {"best_score": -1.0, "best_epoch": 0, "waited": 0, "epochs_done": 0, "history": []}
    if config.resume and os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as handle:
            state = json.load(handle)
        model = keras.models.load_model(os.path.join(checkpoint_dir, "last.keras"))
        log(f"resuming after epoch {state['epochs_done']} from {checkpoint_dir}")
    else:
        model = build_model(config, split.num_items, split.item_popularity)
        compile_model(model, config)
    log(f"{config.model} encoder: {model.encoder.count_params():,} parameters")

    if state["epochs_done"] < config.epochs and not _stop_reason(state, config):
        model.fit(
            _training_data(config, split),
            epochs=config.epochs,
            initial_epoch=state["epochs_done"],
            callbacks=[
                ValidationCallback(split, config, best_path, checkpoint_dir, state),
                keras.callbacks.TensorBoard(os.path.join(config.output_dir, "tensorboard")),
            ],
            shuffle=False,  # the tf.data pipeline shuffles
            verbose=1 if log is print else 2,
        )

    best = keras.models.load_model(best_path)
    kwargs = dict(
        batch_size=config.eval_batch_size, seed=config.seed, protocols=config.protocol_list
    )
    valid = evaluate_split(best, split, "valid", config.max_len, **kwargs)
    test = evaluate_split(best, split, "test", config.max_len, **kwargs)
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
        "mean_epoch_seconds": float(np.mean(epoch_seconds)) if epoch_seconds else None,
        "train_minutes": state.get("elapsed_seconds", 0.0) / 60.0,
        "history": state["history"],
        "parameters": int(best.encoder.count_params()),
    }
    _write_json(os.path.join(config.output_dir, "metrics.json"), metrics)
    log(f"\nTest metrics of the best model (epoch {state['best_epoch']}):")
    log(format_table(test["protocols"]))
    log(f"wrote {os.path.join(config.output_dir, 'metrics.json')}")
    if config.export_dir:
        from hybrid_tfrs.export import export_run  # TensorFlow-only

        log(f"exported {export_run(config.output_dir, config.export_dir, top_k=config.top_k)}")
    return metrics
