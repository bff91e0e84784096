"""Re-evaluates a trained run's best model.

    python trainers/evaluate.py --run_dir=runs/synthetic_hybrid
    python trainers/evaluate.py --run_dir=runs/beauty_hybrid --data_dir=../shared/data \
        --protocols=full,full-unseen,uniform-99

Rebuilds the run's dataset split from its config.json, loads model.keras, and
prints and writes (--output, default <run_dir>/evaluation.json) the metrics.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_string("run_dir", None, "Output folder of a trainers/train.py run.")
flags.DEFINE_string("data_dir", None, "Dataset folder (default: the one the run used).")
flags.DEFINE_list(
    "protocols", ["full", "full-unseen", "uniform-99", "pop-100"], "Protocols to run."
)
flags.DEFINE_list("splits", ["valid", "test"], "Splits to evaluate.")
flags.DEFINE_integer("seed", None, "Seed of sampled negatives (default: the run's seed).")
flags.DEFINE_integer("batch_size", 512, "Users per batch.")
flags.DEFINE_string("output", None, "Where to write the JSON (default <run_dir>/evaluation.json).")
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import keras

    from hybrid_tfrs.data import DataError
    from hybrid_tfrs.evaluation import format_table
    from hybrid_tfrs.training import TrainConfig, evaluate_split, load_split

    config_path = os.path.join(FLAGS.run_dir, "config.json")
    model_path = os.path.join(FLAGS.run_dir, "model.keras")
    for path in (config_path, model_path):
        if not os.path.exists(path):
            print(
                f"error: {path} not found; is --run_dir a training output folder?", file=sys.stderr
            )
            return 2
    with open(config_path, encoding="utf-8") as handle:
        config = TrainConfig(**json.load(handle))
    if FLAGS.data_dir:
        config.data_dir = FLAGS.data_dir
    try:
        _, split = load_split(config)
        model = keras.models.load_model(model_path)
        results = {}
        for part in FLAGS.splits:
            if part not in ("valid", "test"):
                raise ValueError(f"--splits: unknown split {part!r}; use valid and/or test")
            results[part] = evaluate_split(
                model,
                split,
                part,
                config.max_len,
                protocols=tuple(FLAGS.protocols),
                seed=config.seed if FLAGS.seed is None else FLAGS.seed,
                batch_size=FLAGS.batch_size,
            )
            print(f"\n{part}:\n{format_table(results[part]['protocols'])}")
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = FLAGS.output or os.path.join(FLAGS.run_dir, "evaluation.json")
    with open(output, "w", encoding="utf-8") as handle:
        json.dump(
            {"run_dir": FLAGS.run_dir, **results},
            handle,
            indent=2,
        )
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    app.run(main)
