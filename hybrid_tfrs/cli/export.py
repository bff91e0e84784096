"""hybrid-tfrs-export: exports a trained run as a TensorFlow Serving SavedModel.

    hybrid-tfrs-export --run_dir=runs/synthetic_hybrid --export_dir=exported
    hybrid-tfrs-export --run_dir=runs/beauty_hybrid --export_dir=/models \
        --model_name=beauty --version=3 --top_k=50

Writes <export_dir>/<model_name>/<version>/ (model_name defaults to the run's
model kind, version to the Unix time) and prints its path. Serve it with
TensorFlow Serving or the local stand-in (hybrid-tfrs-serve). Also
`python -m hybrid_tfrs.cli.export`.
"""

import os
import sys

from absl import flags

from hybrid_tfrs.cli import common

flags.DEFINE_string("run_dir", None, "Output folder of a hybrid-tfrs-train run.")
flags.DEFINE_string(
    "export_dir", None, "Base folder; the model goes to <export_dir>/<model_name>/."
)
flags.DEFINE_string("model_name", None, "Name clients ask for (default: the run's model kind).")
flags.DEFINE_integer("version", None, "Version number (default: the Unix time).", lower_bound=1)
flags.DEFINE_integer("top_k", 100, "Items the serving_default signature returns.", lower_bound=1)
flags.DEFINE_boolean(
    "exclude_history",
    False,
    "Whether serving_default leaves the history's items out of its results (recommend "
    "takes it per request). Right where items are not consumed twice (films, most "
    "products); wrong for re-orders, music and other repeat consumption.",
)
FLAGS = flags.FLAGS


def main(argv):
    """Checks the flags and the run folder before TensorFlow is imported, then exports."""
    for name in ("run_dir", "export_dir"):
        if not FLAGS[name].value:
            return common.fail(f"--{name}: required")
    if not os.path.isdir(FLAGS.run_dir):
        return common.fail(f"--run_dir={FLAGS.run_dir}: no such folder")
    if os.path.exists(FLAGS.export_dir) and not os.path.isdir(FLAGS.export_dir):
        return common.fail(f"--export_dir={FLAGS.export_dir}: is a file, expected a folder")
    common.quiet_tensorflow()
    import hybrid_tfrs.retrieval  # noqa: F401  (registers the classes model.keras names)
    from hybrid_tfrs.data import DataError
    from hybrid_tfrs.export import export_run

    try:
        path = export_run(
            FLAGS.run_dir,
            FLAGS.export_dir,
            model_name=FLAGS.model_name,
            version=FLAGS.version,
            top_k=FLAGS.top_k,
            exclude_history=FLAGS.exclude_history,
            log=lambda line: print(line, file=sys.stderr),
        )
    except (DataError, ValueError, OSError) as error:  # OSError: no permission, disk full
        return common.fail(error)
    print(path)
    newest = max(int(name) for name in os.listdir(os.path.dirname(path)) if name.isdigit())
    if newest > int(os.path.basename(path)):
        print(
            f"warning: version {newest} is newer; TF Serving's default policy (latest) "
            "keeps serving it, not this one",
            file=sys.stderr,
        )
    return 0


def run(argv=None):
    """Console-script entry point of hybrid-tfrs-export."""
    common.run_command(main, sys.modules[__name__], argv)


if __name__ == "__main__":
    run()
