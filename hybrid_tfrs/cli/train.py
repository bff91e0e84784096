"""hybrid-tfrs-train: trains a sequential retrieval model and evaluates it on the test split.

    hybrid-tfrs-train                                          # hybrid on generated synthetic data
    hybrid-tfrs-train --config=synthetic_hybrid                # a shipped flagfile, by name
    hybrid-tfrs-train --config=beauty_hybrid --data_dir=../shared/data --epochs=5
    hybrid-tfrs-train --flagfile=my.flags                      # or --config=my.flags
    hybrid-tfrs-train --data_file=events.csv --time_column=ts  # your own interactions
    hybrid-tfrs-train --prepared_dir=prepared                  # ... from hybrid-tfrs-preprocess

Flags after --config (or --flagfile) override it. Writes config.json,
vocabulary.txt, model.keras (best on validation NDCG@10), checkpoints/,
tensorboard/ and metrics.json to --output_dir. A run in --output_dir resumes
only with the same settings (--epochs, --patience, --max_train_minutes,
--protocols, --eval_batch_size, --data_dir, --export_dir and --top_k may differ);
--noresume replaces it. Also `python -m hybrid_tfrs.cli.train`.
"""

import dataclasses
import os
import sys

from absl import flags

from hybrid_tfrs.cli import common
from hybrid_tfrs.cli.config import ConfigError, expand_config
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
    "gate_mode": "Hybrid gate: statistics, learned (one alpha), fixed (0.5), hidden_state "
    "(per-user alpha from the branch outputs) or statistics_hidden (both).",
    "gate_features": "Statistics the gate reads, comma-separated groups: basic, trend, "
    "recency, diversity, spectrum (docs/model.md#the-gate).",
    "gate_output": "scalar (one alpha per position) or vector (one per hidden unit).",
    "fusion": "blend: alpha h_linrec + (1 - alpha) h_fmlp; blend_norm: LayerNorm after it.",
    "share_ffn": "Hybrid: the two branches share each layer's feed-forward network.",
    "shared_blocks": "Hybrid: the first k of --num_layers blocks are one FMLP-Rec trunk that "
    "both branches read (k blocks fewer to run; k < num_layers).",
    "branch_loss_weight": "Hybrid: w > 0 adds w x (each branch's own next-item loss) to the "
    "blend's, so both branches learn to recommend whatever the gate does (0 = off).",
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
    "loss_normalization": "batch: mean over each batch's targets; target: every target "
    "weighs the same whatever its batch (sum / mean targets per batch).",
    "batch_size": "Training batch size (users).",
    "epochs": "Maximum epochs.",
    "patience": "Stop after this many epochs without a better validation NDCG@10.",
    "max_train_minutes": "Stop after the epoch that passes this much training time (0 = no limit).",
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
    "resume": "Continue the run in output_dir if it has the same settings; --noresume "
    "deletes that run's files and starts over.",
    "export_dir": "If set, export the best model for TF Serving to <export_dir>/<model>/<v>/.",
    "top_k": "Items the exported serving_default signature returns.",
    "distribution_strategy": "off, one_device, mirrored (all local GPUs, or the CPU) or "
    "multi_worker_mirrored (the machines of TF_CONFIG); --batch_size is the global batch.",
    "collective_timeout_seconds": "multi_worker_mirrored: how long a worker waits for a lost "
    "peer before it fails (then restart every worker with the same command to resume).",
}


def _define_flags():
    """One flag per TrainConfig field, typed by its default; --config for --help."""
    # run() replaces --config by --flagfile before parsing; defined so that --help lists it.
    flags.DEFINE_string(
        "config",
        None,
        "A shipped flagfile by name (e.g. synthetic_hybrid, beauty_hybrid) or a flagfile "
        "path; flags after it override it. An unknown name lists the available ones.",
    )
    define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}
    for field in dataclasses.fields(TrainConfig):
        define.get(type(field.default), flags.DEFINE_string)(
            field.name, field.default, FLAG_HELP[field.name]
        )


_define_flags()
FLAGS = flags.FLAGS


def config_from_flags():
    """The TrainConfig of the parsed flags (output_dir defaulting to runs/<dataset>_<model>).

    With --data_file or --prepared_dir and no --dataset, the dataset is ``own``.
    """
    config = TrainConfig(
        **{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(TrainConfig)}
    )
    if (config.data_file or config.prepared_dir) and not FLAGS["dataset"].present:
        config.dataset = OWN_DATASET
    if not FLAGS["output_dir"].present:
        config.output_dir = os.path.join("runs", f"{config.dataset}_{config.model}")
    return config


def main(argv):
    """Checks settings, output folder and data before TensorFlow is imported, then trains."""
    from hybrid_tfrs import run_dir
    from hybrid_tfrs.data import DataError
    from hybrid_tfrs.data.prepared import load_prepared
    from hybrid_tfrs.run_data import check_sampled_protocols, load_split, uses_keras_cache

    config = config_from_flags()
    try:
        config.validate()
        run_dir.check_run_dir(config)
        if config.prepared_dir:
            load_prepared(config.prepared_dir)  # its metadata, before TensorFlow
        strategy = None
        if uses_keras_cache(config) or config.prepared_dir:
            common.quiet_tensorflow()
            # Reading shards runs TensorFlow ops; a multi-worker strategy must come first.
            strategy = _multi_worker_strategy(config)
        dataset = load_split(config)
        check_sampled_protocols(config, dataset[1])
    except (DataError, ValueError) as error:
        return common.fail(error)
    common.quiet_tensorflow()
    from hybrid_tfrs.training import train

    progress = _terminal_progress()
    try:
        train(
            config,
            log=progress.log if progress else _print_line,
            dataset=dataset,
            callbacks=[progress] if progress else [],
            eval_progress=progress is not None,
            strategy=strategy,
        )
    except (DataError, ValueError) as error:
        return common.fail(error)
    except OSError as error:
        return common.fail(f"{error.filename or config.output_dir}: {error.strerror or error}")
    except KeyboardInterrupt:
        print(f"\ninterrupted; the same command resumes from {config.output_dir}", file=sys.stderr)
        return 130
    return 0


def _multi_worker_strategy(config):
    """The run's MultiWorkerMirroredStrategy, made now (before any TensorFlow op), or None."""
    if config.distribution_strategy != "multi_worker_mirrored":
        return None
    from hybrid_tfrs.distribution import make_strategy

    return make_strategy(config.distribution_strategy, config.collective_timeout_seconds)


def _print_line(message):
    print(message, flush=True)  # a log file gets each line as it happens


def _terminal_progress():
    """A live progress bar when stdout is a terminal; None for a log file or pipe."""
    if not sys.stdout.isatty():
        return None
    from hybrid_tfrs.cli.progress import TerminalProgress

    return TerminalProgress(sys.stdout)


def run(argv=None):
    """Console-script entry point of hybrid-tfrs-train."""
    argv = list(sys.argv if argv is None else argv)
    try:
        argv = expand_config(argv)
    except ConfigError as error:
        sys.exit(common.fail(error))
    common.run_command(main, sys.modules[__name__], argv)


if __name__ == "__main__":
    run()
