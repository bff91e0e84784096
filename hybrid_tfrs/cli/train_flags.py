"""The trainer's flags: one per TrainConfig field, and the TrainConfig they give.

``define_train_flags`` defines them on any ``absl.flags.FlagValues``: hybrid-tfrs-train
on the global ``flags.FLAGS``, benchmarks on a private set to read a flagfile exactly
as the trainer does (``5e-4`` and ``0.0005`` are one learning rate).
"""

import dataclasses
import os

from absl import flags

from hybrid_tfrs.config import OWN_DATASET, TrainConfig

FLAG_HELP = {
    "dataset": "beauty, sports, toys, yelp, ml-1m or synthetic (generated, no download); "
    "own (the default with --data_file or --prepared_dir).",
    "data_dir": "Folder holding the dataset file; unset: download into the Keras cache.",
    "data_file": "Your own interactions instead of --dataset: a CSV, TSV, Parquet or JSON-lines "
    "(.jsonl) file, one event a row (see --user_column, --item_column, --time_column).",
    "prepared_dir": "Your own interactions prepared by hybrid-tfrs-preprocess: its "
    "--output_dir, streamed from the TFRecord shards.",
    "shuffle_buffer": "--prepared_dir: training rows shuffled together (all of them when "
    "fewer; then the shard order stays fixed, else it is shuffled each epoch too).",
    "user_column": "--data_file: column of the user ids.",
    "item_column": "--data_file: column of the item ids.",
    "time_column": "--data_file: numeric column ordering each user's events, equal times in "
    "file order; empty (--time_column=): file order.",
    "delimiter": "--data_file: field separator of a text file (\\t or tab for a tab); "
    "empty: by the extension (.csv comma, .tsv tab).",
    "model": "Encoder: hybrid, linrec, fmlp or sasrec.",
    "max_len": "Latest items of a history the model reads.",
    "hidden_dim": "Embedding and hidden size.",
    "num_layers": "Layers per branch.",
    "num_heads": "Attention heads (hybrid, linrec, sasrec); must divide hidden_dim.",
    "dropout": "Dropout rate.",
    "causal": "Causal layers trained at every position; false: papers' bidirectional "
    "layers trained on the last position of each prefix.",
    "chunk_size": "Chunk length of causal linear attention.",
    "gate_mode": "Hybrid gate: learned (one alpha for everyone, the default), statistics "
    "(per-user alpha from sequence statistics), fixed (0.5), hidden_state (per-user alpha "
    "from the branch outputs) or statistics_hidden (both).",
    "gate_features": "Statistics the gate reads, comma-separated groups: basic, trend, "
    "recency, diversity, spectrum (docs/model.md#the-gate).",
    "gate_output": "scalar (one alpha per position) or vector (one per hidden unit).",
    "fusion": "blend: alpha h_linrec + (1 - alpha) h_fmlp; blend_norm: LayerNorm after it; "
    "layer: the blend inside every layer (one residual stream, one FFN and one alpha a layer).",
    "share_ffn": "Hybrid: the two branches share each layer's feed-forward network.",
    "shared_blocks": "Hybrid: the first k of --num_layers blocks are one FMLP-Rec trunk that "
    "both branches read (k blocks fewer to run; k < num_layers).",
    "branch_loss_weight": "Hybrid: w > 0 adds w x (each branch's own next-item loss) to the "
    "blend's, so both branches learn to recommend whatever the gate does (0 = off).",
    "normalize_first": "Baselines (linrec, fmlp, sasrec): pre-LN blocks, x + drop(mixer(LN(x))), "
    "and a LayerNorm after the last, as the original SASRec code (default: post-LN, as "
    "RecBole's SASRec and FMLP-Rec). Deeper stacks train more easily.",
    "seen_item_bias": "Learn one score offset for the items already in the history (negative "
    "where the next item is never a seen one, positive where repeats are common); scoring, "
    "evaluation and the export apply it.",
    "loss": "softmax (full cross-entropy), sampled_softmax or bce.",
    "num_negatives": "Negatives per batch for sampled_softmax.",
    "sampler": "Negatives for sampled_softmax: in-batch, uniform or mixed.",
    "learning_rate": "Adam learning rate.",
    "weight_decay": "AdamW weight decay (0 = Adam).",
    "lr_schedule": "Learning rate after warmup: constant, cosine or linear decay to "
    "final_lr_ratio x learning_rate over decay_epochs.",
    "warmup_epochs": "Epochs of linear warmup from 0 to learning_rate (fractions allowed).",
    "decay_epochs": "Epochs of the decay after warmup (0 = until --epochs).",
    "final_lr_ratio": "Learning rate at the end of the decay, as a share of learning_rate.",
    "clipnorm": "Clip the global norm of each step's gradients to this (0 = no clipping).",
    "dtype_policy": "float32, or mixed_float16 / mixed_bfloat16: layers compute in 16 bits "
    "on float32 weights, the loss and the scores in float32 (float16 with loss scaling). "
    "For GPUs and TPUs; on a CPU 16-bit math is slower, not faster.",
    "loss_normalization": "target: every target weighs the same whatever its batch (sum / "
    "mean targets per batch); batch: mean over each batch's targets, on one replica only (the "
    "default before 3 December 2026: a run started then resumes only with it).",
    "batch_size": "Training batch size (users).",
    "epochs": "Maximum epochs.",
    "patience": "Stop once more than this many epochs in a row bring no better validation "
    "NDCG@10 (10: after the 11th; Keras's EarlyStopping would stop after the 10th).",
    "validation_protocol": "Protocol of the validation NDCG@10 that picks the best epoch and "
    "drives --patience: full (every item ranked) or full-unseen (the history's items left "
    "out), the one your results report.",
    "max_train_minutes": "Stop after the epoch that passes this much training time (0 = no "
    "limit; not with multi_worker_mirrored, whose workers would each time themselves).",
    "seed": "Seed of initialisation, shuffling, negatives and the synthetic data.",
    "min_length": "Users with fewer items are skipped (and counted).",
    "synthetic_users": "Users of the synthetic dataset.",
    "synthetic_items": "Items of the synthetic dataset.",
    "eval_batch_size": "Users per evaluation batch.",
    "bucket_by_length": "Batch histories of similar length together (faster on short data).",
    "bucket_widths": "Batch widths below max_len for --bucket_by_length, comma-separated "
    "(empty = 8,16,32,...). Finer widths pad short histories less, at one compiled step a width.",
    "window_stride": "0: train each history's latest max_len targets only; s: also cut longer "
    "histories into windows every s items so that every target is trained once (causal "
    "training; --causal=false trains every prefix anyway).",
    "protocols": "Protocols of the final evaluation: full, full-unseen, uniform-99, pop-100.",
    "output_dir": "Where the run's files go (default runs/<dataset>_<model>).",
    "resume": "Continue the run in output_dir if it has the same settings and data; "
    "--noresume deletes that run's files and starts over.",
    "export_dir": "If set, export the best model for TF Serving to <export_dir>/<model>/<v>/.",
    "top_k": "Items the exported serving_default signature returns.",
    "distribution_strategy": "off, one_device, mirrored (all local GPUs, or the CPU) or "
    "multi_worker_mirrored (the machines of TF_CONFIG); --batch_size is the global batch.",
    "collective_timeout_seconds": "multi_worker_mirrored: how long a worker waits for the "
    "others to start, or for a lost peer, before it fails (then restart every worker with the "
    "same command to resume).",
}


def define_train_flags(flag_values):
    """Defines on ``flag_values`` one flag per TrainConfig field, typed by its default, and
    --config (for --help)."""
    # run() replaces --config by --flagfile before parsing; defined so that --help lists it.
    flags.DEFINE_string(
        "config",
        None,
        "A shipped flagfile by name (e.g. synthetic_hybrid, beauty_hybrid) or a flagfile "
        "path; flags after it override it. An unknown name lists the available ones.",
        flag_values=flag_values,
    )
    define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}
    for field in dataclasses.fields(TrainConfig):
        define.get(type(field.default), flags.DEFINE_string)(
            field.name, field.default, FLAG_HELP[field.name], flag_values=flag_values
        )


def config_from_flags(flag_values=flags.FLAGS):
    """The TrainConfig of the parsed ``flag_values`` (output_dir defaulting to
    runs/<dataset>_<model>).

    With --data_file or --prepared_dir and no --dataset, the dataset is ``own``.
    """
    config = TrainConfig(
        **{f.name: getattr(flag_values, f.name) for f in dataclasses.fields(TrainConfig)}
    )
    if (config.data_file or config.prepared_dir) and not flag_values["dataset"].present:
        config.dataset = OWN_DATASET
    if not flag_values["output_dir"].present:
        config.output_dir = os.path.join("runs", f"{config.dataset}_{config.model}")
    return config
