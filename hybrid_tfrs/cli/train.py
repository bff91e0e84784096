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
only on the same data and with the same settings (--epochs, --patience, --max_train_minutes,
--protocols, --eval_batch_size, --data_dir, --data_file, --output_dir, --export_dir, --top_k,
--distribution_strategy, --collective_timeout_seconds and, where every target
weighs the same, --bucket_widths may differ); --noresume replaces it. Also
`python -m hybrid_tfrs.cli.train`.
"""

import sys

from absl import flags

from hybrid_tfrs.cli import common, train_flags
from hybrid_tfrs.cli.config import ConfigError, expand_config
from hybrid_tfrs.cli.train_flags import config_from_flags

train_flags.define_train_flags(flags.FLAGS)
flags.adopt_module_key_flags(train_flags)  # --help lists them as this command's
FLAGS = flags.FLAGS


def main(argv):
    """Checks settings, output folder and data before TensorFlow is imported, then trains."""
    from hybrid_tfrs import run_dir
    from hybrid_tfrs.data import DataError
    from hybrid_tfrs.data.prepared import load_prepared
    from hybrid_tfrs.run_data import check_sampled_protocols, load_split, uses_keras_cache

    config = config_from_flags()
    try:
        config.validate()
        state = run_dir.check_run_dir(config)
        if run_dir.nothing_left_here(config, state):  # before the data is loaded
            print(run_dir.WORKER_DONE, flush=True)
            return 0
        if config.prepared_dir:
            load_prepared(config.prepared_dir)  # its metadata, before TensorFlow
        strategy = None
        if uses_keras_cache(config) or config.prepared_dir:
            common.quiet_tensorflow()
            # Reading shards runs TensorFlow ops; a multi-worker strategy must come first.
            strategy = _multi_worker_strategy(config, state)
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


def _multi_worker_strategy(config, state):
    """The run's MultiWorkerMirroredStrategy, made now (before any TensorFlow op), or
    None (not multi-worker: ``train`` makes it); the default strategy for a chief
    whose training is done."""
    if config.distribution_strategy != "multi_worker_mirrored":
        return None
    from hybrid_tfrs.distribution import run_strategy

    return run_strategy(config, state, log=_print_line)


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
