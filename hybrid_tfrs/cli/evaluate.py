"""hybrid-tfrs-evaluate: re-evaluates a trained run's best model.

    hybrid-tfrs-evaluate --run_dir=runs/synthetic_hybrid
    hybrid-tfrs-evaluate --run_dir=runs/beauty_hybrid --data_dir=../shared/data \
        --protocols=full,full-unseen,uniform-99

Rebuilds the run's dataset split from its config.json (--data_dir or --data_file
where the data has moved), checks that it is the data the run was trained on,
loads model.keras, and prints and writes (--output, default
<run_dir>/evaluation.json) the metrics.
A --prepared_dir run's users stream from its shards, --batch_size at a time.
Also `python -m hybrid_tfrs.cli.evaluate`.

``--write_ranks`` also writes each split's per-user target ranks to
``<run_dir>/<split>_ranks.npz`` (``test_ranks.npz`` is the file a training run
writes itself, read by the paired tests of hybrid_tfrs.significance); the
protocols it does not run are kept from an earlier file of the same users. E.g. for
a run trained before runs kept their ranks:

    hybrid-tfrs-evaluate --run_dir=runs/beauty_hybrid --splits=test --write_ranks
"""

import os
import sys

from absl import flags

from hybrid_tfrs.cli import common
from hybrid_tfrs.config import PROTOCOLS

SPLITS = ("valid", "test")

flags.DEFINE_string("run_dir", None, "Output folder of a hybrid-tfrs-train run.")
flags.DEFINE_string("data_dir", None, "Dataset folder (default: the one the run used).")
flags.DEFINE_string(
    "data_file",
    None,
    "Interaction file of a --data_file run (default: the one the run used, as it was "
    "typed: a relative path is read from the current folder).",
)
flags.DEFINE_list("protocols", list(PROTOCOLS), "Protocols to run.")
flags.DEFINE_list("splits", list(SPLITS), "Splits to evaluate.")
flags.DEFINE_integer("seed", None, "Seed of sampled negatives (default: the run's seed).")
flags.DEFINE_integer("batch_size", 512, "Users per batch.", lower_bound=1)
flags.DEFINE_integer(
    "chunk_size",
    None,
    "Items scored at a time in full ranking; memory ~ batch_size x chunk_size "
    "floats (default: 2**24 // batch_size).",
    lower_bound=1,
)
flags.DEFINE_string("output", None, "Where to write the JSON (default <run_dir>/evaluation.json).")
flags.DEFINE_boolean(
    "write_ranks",
    False,
    "Also write each split's per-user target ranks to <run_dir>/<split>_ranks.npz "
    "(for paired tests): the protocols run replace theirs in the training run's "
    "test_ranks.npz, the others are kept.",
)
FLAGS = flags.FLAGS


def main(argv):
    """Checks flags, run folder and data before TensorFlow is imported, then evaluates."""
    from hybrid_tfrs import run_dir
    from hybrid_tfrs.data import DataError
    from hybrid_tfrs.run_data import load_split, uses_keras_cache

    if not FLAGS.run_dir:
        return common.fail("--run_dir: required (the output folder of a hybrid-tfrs-train run)")
    unknown_splits = sorted(set(FLAGS.splits) - set(SPLITS))
    unknown_protocols = sorted(set(FLAGS.protocols) - set(PROTOCOLS))
    if unknown_splits:
        return common.fail(f"--splits: unknown {unknown_splits}; use valid and/or test")
    if unknown_protocols:
        return common.fail(f"--protocols: unknown {unknown_protocols}; use {', '.join(PROTOCOLS)}")
    model_path = os.path.join(FLAGS.run_dir, run_dir.BEST_MODEL_FILE)
    try:
        if not os.path.isfile(os.path.join(FLAGS.run_dir, run_dir.CONFIG_FILE)):
            raise run_dir.RunDirError(
                f"{os.path.join(FLAGS.run_dir, run_dir.CONFIG_FILE)} not found; "
                "is --run_dir a training output folder?"
            )
        config = run_dir.read_config(FLAGS.run_dir)
        if not os.path.isfile(model_path):
            raise run_dir.RunDirError(f"{model_path} not found; has the run finished an epoch?")
        _use_data_flags(config)
        if uses_keras_cache(config) or config.prepared_dir:
            common.quiet_tensorflow()  # reading shards runs TensorFlow ops
        data, split = load_split(config)
        _check_same_data(data, split)
    except (DataError, ValueError) as error:
        return common.fail(error)
    common.quiet_tensorflow()
    from hybrid_tfrs.evaluation import format_table
    from hybrid_tfrs.training import evaluate_split, load_run_model

    try:
        model = load_run_model(model_path, way_out="train the run again (hybrid-tfrs-train)")
        results = {}
        for part in FLAGS.splits:
            results[part] = evaluate_split(
                model,
                split,
                part,
                config.max_len,
                protocols=tuple(FLAGS.protocols),
                seed=config.seed if FLAGS.seed is None else FLAGS.seed,
                batch_size=FLAGS.batch_size,
                chunk_size=FLAGS.chunk_size,
                progress=sys.stdout.isatty(),
                return_ranks=FLAGS.write_ranks,
            )
            print(f"\n{part}:\n{format_table(results[part]['protocols'])}")
    except (DataError, ValueError) as error:
        return common.fail(error)
    if FLAGS.write_ranks:
        from hybrid_tfrs.significance import write_ranks

        for part, result in results.items():
            path = os.path.join(FLAGS.run_dir, run_dir.RANKS_FILE.format(split=part))
            ranks, kept = _with_earlier_ranks(path, result.pop("ranks"), split.user_ids, part)
            write_ranks(path, ranks, split.user_ids, part)
            print(f"wrote {path}" + (f" (kept {', '.join(kept)} from before)" if kept else ""))
    output = FLAGS.output or os.path.join(FLAGS.run_dir, "evaluation.json")
    run_dir.write_json(output, {"run_dir": FLAGS.run_dir, **results})
    print(f"wrote {output}")
    return 0


def _use_data_flags(config):
    """Points ``config`` (the run's) at --data_dir / --data_file; ValueError naming
    --data_file for a run that read none, or the run's file when it is gone."""
    if FLAGS.data_dir:
        config.data_dir = FLAGS.data_dir
    if FLAGS.data_file:
        if not config.data_file:
            raise ValueError(f"--data_file: {FLAGS.run_dir} was not trained on a --data_file")
        config.data_file = FLAGS.data_file
    elif config.data_file and not os.path.exists(config.data_file):
        raise ValueError(
            f"{config.data_file}: no such file (the run's --data_file; a relative path is "
            "read from the current folder: pass --data_file=<where it is now>)"
        )


def _check_same_data(data, split):
    """RunDirError when the run was trained on other data than ``data``: its items would
    be scored under other ids (e.g. events added to the file since)."""
    from hybrid_tfrs import run_dir
    from hybrid_tfrs.run_data import data_summary

    state = run_dir.read_state(FLAGS.run_dir)
    summary = data_summary(data.vocabulary, split, split.stats())
    changed = run_dir.data_changes(FLAGS.run_dir, state, summary, data.vocabulary)
    if changed:
        raise run_dir.RunDirError(
            f"--run_dir={FLAGS.run_dir} was trained on other data ({changed}); evaluate it "
            "on the data it was trained on (--data_dir, --data_file)"
        )


def _with_earlier_ranks(path, ranks, user_ids, split):
    """(``ranks`` plus the protocols that an earlier ranks file of the same split and
    users holds and this evaluation did not run, [those protocols]); a file of other
    users, or a broken one, is replaced whole."""
    from hybrid_tfrs.significance import read_ranks

    if not os.path.exists(path):
        return ranks, []
    try:
        earlier = read_ranks(path)
    except ValueError:
        return ranks, []
    if earlier.split != split or earlier.user_ids.tolist() != [str(u) for u in user_ids]:
        return ranks, []
    kept = [protocol for protocol in earlier.ranks if protocol not in ranks]
    return {**{protocol: earlier.ranks[protocol] for protocol in kept}, **ranks}, kept


def run(argv=None):
    """Console-script entry point of hybrid-tfrs-evaluate."""
    common.run_command(main, sys.modules[__name__], argv)


if __name__ == "__main__":
    run()
