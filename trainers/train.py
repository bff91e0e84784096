"""Trains a sequential retrieval model and evaluates it on the test split.

    python trainers/train.py                                   # hybrid on bundled synthetic data
    python trainers/train.py --dataset=beauty --data_dir=../shared/data
    python trainers/train.py --flagfile=flags/ml-1m_hybrid.flags

Writes config.json, vocabulary.txt, model.keras (best on validation NDCG@10),
checkpoints/ (resumable), tensorboard/ and metrics.json to --output_dir.
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAG_HELP = {
    "dataset": "beauty, sports, toys, yelp, ml-1m or synthetic (generated, no download).",
    "data_dir": "Folder holding the dataset file; unset: download into the Keras cache.",
    "model": "Encoder: hybrid, linrec, fmlp or sasrec.",
    "max_len": "Latest items of a history the model reads.",
    "hidden_dim": "Embedding and hidden size.",
    "num_layers": "Layers per branch.",
    "num_heads": "Attention heads (hybrid, linrec, sasrec).",
    "dropout": "Dropout rate.",
    "causal": "Causal layers trained at every position; false: papers' bidirectional "
    "layers trained on the last position of each prefix.",
    "chunk_size": "Chunk length of causal linear attention.",
    "gate_mode": "Hybrid gate: statistics, learned (one alpha), fixed (0.5) or hidden_state "
    "(per-user alpha from the branch outputs).",
    "loss": "softmax (full cross-entropy), sampled_softmax or bce.",
    "num_negatives": "Negatives per batch for sampled_softmax.",
    "sampler": "Negatives for sampled_softmax: in-batch, uniform or mixed.",
    "learning_rate": "Adam learning rate.",
    "weight_decay": "AdamW weight decay (0 = Adam).",
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
    "window_stride": "0: train each history's latest max_len targets only; s: also cut longer "
    "histories into windows every s items so that every target is trained once (causal "
    "training; --causal=false trains every prefix anyway).",
    "protocols": "Protocols of the final evaluation: full, full-unseen, uniform-99, pop-100.",
    "output_dir": "Where the run's files go.",
    "resume": "Continue from output_dir/checkpoints if a previous run left one.",
    "export_dir": "If set, export the best model for TF Serving to <export_dir>/<model>/<v>/.",
    "top_k": "Items the exported serving_default signature returns.",
}


def _define_flags():
    from hybrid_tfrs.training import TrainConfig

    for field in dataclasses.fields(TrainConfig):
        default, help_text = field.default, FLAG_HELP[field.name]
        if isinstance(default, bool):
            flags.DEFINE_boolean(field.name, default, help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, help_text)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, help_text)
        else:
            flags.DEFINE_string(field.name, default, help_text)
    return TrainConfig


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from hybrid_tfrs.data import DataError

    config = TrainConfig(
        **{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(TrainConfig)}
    )
    if config.output_dir == TrainConfig.output_dir:
        config.output_dir = os.path.join("runs", f"{config.dataset}_{config.model}")
    try:
        from hybrid_tfrs.training import train

        train(config)
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


TrainConfig = _define_flags()
FLAGS = flags.FLAGS

if __name__ == "__main__":
    app.run(main)
