"""Exports a trained run as a TensorFlow Serving SavedModel.

    python trainers/export.py --run_dir=runs/synthetic_hybrid --export_dir=exported
    python trainers/export.py --run_dir=runs/beauty_hybrid --export_dir=/models \
        --model_name=beauty --version=3 --top_k=50

Writes <export_dir>/<model_name>/<version>/ (model_name defaults to the run's
model kind, version to the Unix time) and prints its path. Serve it with
`python -m serving.server --model_name=<model_name> --model_base_path=<export_dir>/<model_name>`
or TensorFlow Serving (see serving/README.md).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_string("run_dir", None, "Output folder of a trainers/train.py run.")
flags.DEFINE_string(
    "export_dir", None, "Base folder; the model goes to <export_dir>/<model_name>/."
)
flags.DEFINE_string("model_name", None, "Name clients ask for (default: the run's model kind).")
flags.DEFINE_integer("version", None, "Version number (default: the Unix time).", lower_bound=1)
flags.DEFINE_integer(
    "top_k", 100, "Items returned by the serving_default signature.", lower_bound=1
)
flags.mark_flags_as_required(["run_dir", "export_dir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not os.path.isdir(FLAGS.run_dir):
        print(f"error: --run_dir={FLAGS.run_dir}: no such folder", file=sys.stderr)
        return 2
    from hybrid_tfrs.data import DataError
    from hybrid_tfrs.export import export_run

    try:
        path = export_run(
            FLAGS.run_dir,
            FLAGS.export_dir,
            model_name=FLAGS.model_name,
            version=FLAGS.version,
            top_k=FLAGS.top_k,
        )
    except (DataError, ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    app.run(main)
