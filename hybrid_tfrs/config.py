"""Settings of a training run and the names they are checked against.

Imports neither Keras nor TensorFlow, so the command-line tools check their
flags in a fraction of a second; the heavy modules take the name lists from here.
"""

import dataclasses
import json
import os

ENCODER_KINDS = ("hybrid", "linrec", "fmlp", "sasrec")
ENCODERS_WITH_HEADS = ("hybrid", "linrec", "sasrec")
GATE_MODES = ("statistics", "learned", "fixed", "hidden_state", "statistics_hidden")
# Feature groups the statistics gate can read (hybrid_tfrs/layers/sequence_features.py).
GATE_FEATURE_GROUPS = ("basic", "trend", "recency", "diversity", "spectrum")
GATE_OUTPUTS = ("scalar", "vector")
FUSIONS = ("blend", "blend_norm", "layer")
# fusion="layer" gates before any layer runs: no branch outputs exist for the gate to read.
LAYER_FUSION_GATE_MODES = ("statistics", "learned", "fixed")
# The hybrid's default gate: one learned alpha for every user. The statistics gate was
# the default until 4 December 2026; it tied one learned alpha on Beauty and ML-1M and
# shut on Beauty (docs/model.md#the-gate, benchmarks/results/gate.md section 18).
DEFAULT_GATE_MODE = "learned"
# The hybrid's fusion variants (docs/model.md#the-gate): name -> the TrainConfig
# fields (and build_encoder arguments) that differ from the default hybrid. The
# variants measured on the statistics gate keep it, so their results stay theirs.
STATISTICS_GATE = {"gate_mode": "statistics"}
GATE_VARIANTS = {
    "hybrid-statistics-gate": dict(STATISTICS_GATE),  # a per-user alpha from sequence statistics
    "hybrid-blend-norm": {**STATISTICS_GATE, "fusion": "blend_norm"},  # LayerNorm after the blend
    "hybrid-vector-gate": {**STATISTICS_GATE, "gate_output": "vector"},  # one alpha a hidden unit
    "hybrid-all-features-hidden": {  # every statistic and the branch outputs
        "gate_mode": "statistics_hidden",
        "gate_features": ",".join(GATE_FEATURE_GROUPS),
    },
    "hybrid-shared-ffn": {**STATISTICS_GATE, "share_ffn": True},  # one FFN a layer for both
    "hybrid-shared-block": {**STATISTICS_GATE, "shared_blocks": 1},  # one FMLP block under both
    # the blend inside every layer, one FFN a layer, one statistics-gated alpha a layer
    "hybrid-layer-fusion": {**STATISTICS_GATE, "fusion": "layer"},
    "hybrid-layer-fusion-fixed": {"fusion": "layer", "gate_mode": "fixed"},  # and alpha 0.5
}
LOSSES = ("softmax", "sampled_softmax", "bce")
NEGATIVE_SAMPLERS = ("in-batch", "uniform", "mixed")
PROTOCOLS = ("full", "full-unseen", "uniform-99", "pop-100")
METRICS = ("HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR", "MRR@10")
NUM_NEGATIVES = {"uniform-99": 99, "pop-100": 100}
# Protocols the per-epoch validation can rank by: not the sampled ones, which redraw
# their negatives.
VALIDATION_PROTOCOLS = tuple(p for p in PROTOCOLS if p not in NUM_NEGATIVES)
LOSS_NORMALIZATIONS = ("batch", "target")
LR_SCHEDULES = ("constant", "cosine", "linear")
# Keras dtype policies a run may train under: mixed ones compute in 16 bits and
# keep float32 weights (float16 with loss scaling; bfloat16 needs none).
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
MULTI_WORKER = "multi_worker_mirrored"
DISTRIBUTION_STRATEGIES = ("off", "one_device", "mirrored", MULTI_WORKER)
# The --dataset of a run on the user's own data (--data_file or --prepared_dir).
OWN_DATASET = "own"
# --delimiter spellings of the tab, which a shell or flagfile cannot pass as such.
TAB_NAMES = ("\\t", "tab", "\t")

# Settings that change neither the model nor how it is trained: a run may be
# resumed with other values (where files go, how long to go on, final evaluation).
RESUMABLE_WITH_OTHER = frozenset(
    {
        "output_dir",
        "resume",
        "data_dir",
        "data_file",  # where the file is (moved, or a relative path); the data is checked
        "export_dir",
        "top_k",
        "eval_batch_size",
        "protocols",
        "epochs",
        "patience",
        "max_train_minutes",
        # the global batch and the math stay the same (a step that several replicas
        # would change, --loss_normalization=batch, is refused: distribution.check_settings)
        "distribution_strategy",
        "bucket_widths",  # the same rows and targets in other batches (with target weighting)
        "collective_timeout_seconds",
    }
)
# Settings only the hybrid reads: a baseline's run is the same whatever they say.
HYBRID_ONLY_SETTINGS = frozenset(
    {
        "gate_mode",
        "gate_features",
        "gate_output",
        "fusion",
        "share_ffn",
        "shared_blocks",
        "branch_loss_weight",
    }
)


@dataclasses.dataclass
class TrainConfig:
    """Settings of one run; each field is a flag of ``hybrid-tfrs-train``."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    data_file: str | None = None
    prepared_dir: str | None = None
    shuffle_buffer: int = 100_000
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str = "timestamp"
    delimiter: str = ""
    model: str = "hybrid"
    max_len: int = 50
    hidden_dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    causal: bool = True
    chunk_size: int = 64
    gate_mode: str = DEFAULT_GATE_MODE
    gate_features: str = "basic"
    gate_output: str = "scalar"
    fusion: str = "blend"
    share_ffn: bool = False
    shared_blocks: int = 0
    branch_loss_weight: float = 0.0
    normalize_first: bool = False
    seen_item_bias: bool = False
    loss: str = "softmax"
    num_negatives: int = 256
    sampler: str = "mixed"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay_epochs: float = 0.0
    final_lr_ratio: float = 0.0
    clipnorm: float = 0.0
    dtype_policy: str = "float32"
    loss_normalization: str = "target"
    batch_size: int = 128
    epochs: int = 20
    patience: int = 5
    validation_protocol: str = "full"
    max_train_minutes: float = 0.0
    seed: int = 0
    min_length: int = 3
    synthetic_users: int = 2000
    synthetic_items: int = 400
    eval_batch_size: int = 512
    bucket_by_length: bool = True
    bucket_widths: str = ""
    window_stride: int = 0
    protocols: str = ",".join(PROTOCOLS)
    output_dir: str = "runs/synthetic_hybrid"
    resume: bool = True
    export_dir: str | None = None
    top_k: int = 100
    distribution_strategy: str = "off"
    collective_timeout_seconds: float = 120.0

    def validate(self):
        """Raises ValueError naming the flag for an impossible setting."""
        checks = [
            (self.model in ENCODER_KINDS, "model", f"must be one of {ENCODER_KINDS}"),
            (self.loss in LOSSES, "loss", f"must be one of {LOSSES}"),
            (self.sampler in NEGATIVE_SAMPLERS, "sampler", f"must be one of {NEGATIVE_SAMPLERS}"),
            (self.gate_mode in GATE_MODES, "gate_mode", f"must be one of {GATE_MODES}"),
            (self.gate_output in GATE_OUTPUTS, "gate_output", f"must be one of {GATE_OUTPUTS}"),
            (self.fusion in FUSIONS, "fusion", f"must be one of {FUSIONS}"),
            (
                bool(self.gate_feature_list)
                and set(self.gate_feature_list) <= set(GATE_FEATURE_GROUPS),
                "gate_features",
                f"must be a comma-separated list of {GATE_FEATURE_GROUPS}",
            ),
            (
                self._bucket_widths_valid(),
                "bucket_widths",
                "must be increasing positive integers, comma-separated (empty = 8,16,32,...)",
            ),
            (self.max_len >= 1, "max_len", "must be >= 1"),
            (self.hidden_dim >= 1, "hidden_dim", "must be >= 1"),
            (self.num_layers >= 1, "num_layers", "must be >= 1"),
            (self.num_heads >= 1, "num_heads", "must be >= 1"),
            (self.chunk_size >= 1, "chunk_size", "must be >= 1"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1"),
            (self.epochs >= 1, "epochs", "must be >= 1"),
            (self.patience >= 0, "patience", "must be >= 0"),
            (
                self.validation_protocol in VALIDATION_PROTOCOLS,
                "validation_protocol",
                f"must be one of {VALIDATION_PROTOCOLS}",
            ),
            (self.max_train_minutes >= 0, "max_train_minutes", "must be >= 0 (0 = no limit)"),
            (
                not (self.max_train_minutes and self.distribution_strategy == MULTI_WORKER),
                "max_train_minutes",
                f"cannot be combined with --distribution_strategy={MULTI_WORKER} (each worker "
                "would time itself and they could stop at different epochs); use --epochs "
                "and --patience",
            ),
            (self.learning_rate > 0, "learning_rate", "must be > 0"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {LR_SCHEDULES}"),
            (self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0"),
            (self.decay_epochs >= 0, "decay_epochs", "must be >= 0 (0 = until --epochs)"),
            (0 <= self.final_lr_ratio <= 1, "final_lr_ratio", "must be in [0, 1]"),
            (self.clipnorm >= 0, "clipnorm", "must be >= 0 (0 = no clipping)"),
            (
                self.dtype_policy in DTYPE_POLICIES,
                "dtype_policy",
                f"must be one of {DTYPE_POLICIES}",
            ),
            (self.branch_loss_weight >= 0, "branch_loss_weight", "must be >= 0 (0 = off)"),
            (
                self.shared_blocks == 0 or self.model == "hybrid",
                "shared_blocks",
                f"needs --model=hybrid (the {self.model} encoder has one stack)",
            ),
            (
                not (self.normalize_first and self.model == "hybrid"),
                "normalize_first",
                "is built for the baselines (linrec, fmlp, sasrec), not --model=hybrid",
            ),
            (
                0 <= self.shared_blocks < self.num_layers,
                "shared_blocks",
                f"must be in 0..num_layers - 1 = {self.num_layers - 1}",
            ),
            (
                self.fusion != "layer" or self.gate_mode in LAYER_FUSION_GATE_MODES,
                "gate_mode",
                f"--fusion=layer gates before any layer runs: one of {LAYER_FUSION_GATE_MODES}",
            ),
            (
                self.fusion != "layer" or not (self.share_ffn or self.shared_blocks),
                "fusion",
                "has one FFN a layer and one stack already: no --share_ffn or --shared_blocks",
            ),
            (
                self.fusion != "layer" or self.branch_loss_weight == 0,
                "branch_loss_weight",
                "--fusion=layer has no branch outputs to score (it blends inside each layer)",
            ),
            (
                self.branch_loss_weight == 0 or self.model == "hybrid",
                "branch_loss_weight",
                f"needs --model=hybrid (the {self.model} encoder has one branch)",
            ),
            (
                self.loss_normalization in LOSS_NORMALIZATIONS,
                "loss_normalization",
                f"must be one of {LOSS_NORMALIZATIONS}",
            ),
            (
                self.distribution_strategy in DISTRIBUTION_STRATEGIES,
                "distribution_strategy",
                f"must be one of {DISTRIBUTION_STRATEGIES}",
            ),
            (self.collective_timeout_seconds > 0, "collective_timeout_seconds", "must be > 0"),
            (0 <= self.dropout < 1, "dropout", "must be in [0, 1)"),
            (self.num_negatives >= 1, "num_negatives", "must be >= 1"),
            (self.top_k >= 1, "top_k", "must be >= 1"),
            (self.synthetic_users >= 1, "synthetic_users", "must be >= 1"),
            (
                0 <= self.window_stride <= self.max_len,
                "window_stride",
                f"must be in 0..max_len={self.max_len} (0 = latest max_len targets only)",
            ),
            (self.min_length >= 3, "min_length", "must be >= 3 (train, valid and test items)"),
        ]
        checks += self._own_data_checks()
        unknown = set(self.protocol_list) - set(PROTOCOLS)
        checks.append((not unknown, "protocols", f"unknown {sorted(unknown)}; use {PROTOCOLS}"))
        for ok, flag, message in checks:
            if not ok:
                raise ValueError(f"--{flag}={getattr(self, flag)!r}: {message}")
        if self.distribution_strategy == MULTI_WORKER:
            cluster_from_tf_config()
        if self.model in ENCODERS_WITH_HEADS and self.hidden_dim % self.num_heads:
            raise ValueError(
                f"--hidden_dim={self.hidden_dim}: must be divisible by "
                f"--num_heads={self.num_heads} (the {self.model} encoder splits it into heads)"
            )

    def _own_data_checks(self):
        """``(ok, flag, message)`` checks of --data_file / --prepared_dir and their settings."""
        own = self.data_file or self.prepared_dir
        return [
            (
                not (self.data_file and self.prepared_dir),
                "prepared_dir",
                "cannot be combined with --data_file (a run reads one of them)",
            ),
            (
                not own or self.dataset == OWN_DATASET,
                "dataset",
                f"cannot be combined with --{'data_file' if self.data_file else 'prepared_dir'} "
                "(a run reads one dataset); drop --dataset",
            ),
            (
                own or self.dataset != OWN_DATASET,
                "dataset",
                "needs --data_file or --prepared_dir (the data to read)",
            ),
            (self.shuffle_buffer >= 1, "shuffle_buffer", "must be >= 1"),
            (bool(self.user_column.strip()), "user_column", "must name a column"),
            (bool(self.item_column.strip()), "item_column", "must name a column"),
            (
                len(self.delimiter_char or ",") == 1,
                "delimiter",
                "must be one character (or \\t / tab); empty: by the file's extension",
            ),
        ]

    @property
    def delimiter_char(self):
        """The field separator of a text --data_file; None: by its extension."""
        if self.delimiter in TAB_NAMES:
            return "\t"
        return self.delimiter or None

    @property
    def bucket_width_list(self):
        """The --bucket_widths widths as ints, or None for the default 8, 16, 32, ..."""
        if not self.bucket_widths.strip():
            return None
        return [int(w) for w in self.bucket_widths.split(",")]

    def _bucket_widths_valid(self):
        try:
            widths = self.bucket_width_list
        except ValueError:
            return False
        return widths is None or (widths[0] >= 1 and all(a < b for a, b in zip(widths, widths[1:])))

    @property
    def gate_feature_list(self):
        return tuple(g.strip() for g in self.gate_features.split(",") if g.strip())

    @property
    def protocol_list(self):
        return tuple(p.strip() for p in self.protocols.split(",") if p.strip())

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload):
        """The config a run's config.json describes; ValueError on a key this version lacks."""
        unknown = set(payload) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        return cls(**payload)

    def differences(self, other):
        """``{flag: (other's value, this value)}`` for the settings that would change the run.

        ``bucket_widths`` changes it under ``loss_normalization="batch"``: a batch's
        mean weighs each of its targets by 1 / (targets in the batch), so other
        widths weigh the same targets otherwise. The hybrid's gate and fusion
        settings change nothing for a baseline.
        """
        free = RESUMABLE_WITH_OTHER
        if "hybrid" not in (self.model, other.model):
            free = free | HYBRID_ONLY_SETTINGS
        if "batch" in (self.loss_normalization, other.loss_normalization):
            free = free - {"bucket_widths"}
        return {
            field.name: (getattr(other, field.name), getattr(self, field.name))
            for field in dataclasses.fields(self)
            if field.name not in free and getattr(other, field.name) != getattr(self, field.name)
        }


def is_chief_task(task_type, index, cluster):
    """Whether a ``TF_CONFIG`` task is the chief: the ``chief`` task, or worker 0 of
    a cluster ({job: [host:port]}) without one."""
    if task_type == "chief":
        return True
    return task_type == "worker" and int(index) == 0 and "chief" not in cluster


def chief_in_tf_config(environ=os.environ):
    """Whether ``TF_CONFIG`` names this process the chief (ValueError naming it if broken)."""
    config = cluster_from_tf_config(environ)
    return is_chief_task(config["task"]["type"], config["task"]["index"], config["cluster"])


def cluster_from_tf_config(environ=os.environ):
    """The parsed ``TF_CONFIG`` of a multi-worker run; raises ValueError naming it."""
    raw = environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "--distribution_strategy=multi_worker_mirrored needs the TF_CONFIG environment "
            'variable, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}} (see README, "Training on several GPUs '
            'or machines")'
        )
    expected = 'expected {"cluster": {"worker": [...]}, "task": {"type": "worker", "index": N}}'
    try:
        config = json.loads(raw)
    except ValueError:
        raise ValueError(f"TF_CONFIG: not JSON; {expected}") from None
    try:
        workers = config["cluster"]["worker"]
        task_type, index = config["task"]["type"], int(config["task"]["index"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"TF_CONFIG: no cluster.worker or task type and index; {expected}"
        ) from None
    if not isinstance(workers, list) or not workers:
        raise ValueError("TF_CONFIG: cluster.worker must be a non-empty list of host:port")
    for job, addresses in config["cluster"].items():
        if not isinstance(addresses, list):
            raise ValueError(f"TF_CONFIG: cluster.{job} must be a list of host:port")
        for i, address in enumerate(addresses):
            host, _, port = str(address).rpartition(":")
            if not (host and port.isdigit()):
                raise ValueError(
                    f"TF_CONFIG: cluster.{job}[{i}]={address!r} must be host:port, "
                    'the port a number (e.g. "10.0.0.1:12345")'
                )
    tasks = config["cluster"].get(task_type)
    if not isinstance(tasks, list) or not 0 <= index < len(tasks):
        raise ValueError(f"TF_CONFIG: task {task_type}:{index} is not in cluster.{task_type}")
    return config
