"""hybrid-tfrs-preprocess: interaction logs -> prepared shards for --prepared_dir (Apache Beam).

    hybrid-tfrs-preprocess --input='logs/*.csv' --output_dir=prepared
    hybrid-tfrs-preprocess --input='logs/*.parquet' --output_dir=prepared --time_column=ts \\
        --min_item_count=5
    hybrid-tfrs-preprocess --input='gs://bucket/logs/*.jsonl' --output_dir=gs://bucket/prepared \\
        --pipeline_options='--runner=DataflowRunner --project=P --region=R \\
        --temp_location=gs://bucket/tmp --requirements_file=requirements.txt'
    hybrid-tfrs-train --prepared_dir=prepared

Reads CSV, TSV, Parquet or JSON-lines files (one event a row), groups the events
by user, orders them by time (equal times in file order; files in name order),
drops rare items (--min_item_count) and short users (--min_length), numbers the
items by frequency, splits leave-one-out and writes users-*.tfrecord,
vocabulary.txt, item_popularity.txt, stats.json (counts, dropped rows and why)
and dead_letter-*.jsonl (each malformed row, with file, line and reason) to
--output_dir. Runs on Beam's DirectRunner unless --pipeline_options names
another runner (Dataflow, Flink, Spark). Needs the beam extra:
pip install "hybrid-tfrs[beam]". Also `python -m hybrid_tfrs.cli.preprocess`.
"""

import json
import logging
import os
import shlex
import sys
import time

from absl import flags
from absl import logging as absl_logging

from hybrid_tfrs.cli import common

flags.DEFINE_string("input", None, "Input files: a path or glob; several separated by commas.")
flags.DEFINE_string("output_dir", None, "Folder of the prepared data (new or empty).")
flags.DEFINE_string("user_column", "user_id", "Column of the user ids.")
flags.DEFINE_string("item_column", "item_id", "Column of the item ids.")
flags.DEFINE_string(
    "time_column", "timestamp", "Numeric column ordering each user's events; empty: file order."
)
flags.DEFINE_string(
    "delimiter", "", "Field separator of text files (\\t or tab for a tab); empty: by extension."
)
flags.DEFINE_integer("min_length", 3, "Users with fewer events are dropped (and counted); >= 3.")
flags.DEFINE_integer(
    "min_item_count", 0, "Events of items seen fewer times are dropped first (0: keep all)."
)
flags.DEFINE_integer(
    "num_shards",
    8,
    "User shards to write (the trainer reads them in parallel); 0: the runner chooses.",
)
flags.DEFINE_string(
    "pipeline_options",
    "",
    "Apache Beam pipeline options, e.g. '--runner=DataflowRunner --project=P --region=R "
    "--temp_location=gs://b/tmp' or '--direct_num_workers=2 --direct_running_mode="
    "multi_processing'; empty: the DirectRunner in this process.",
)
FLAGS = flags.FLAGS


def _settings():
    """The checked flags: (patterns, columns, sep); ValueError naming the flag."""
    from hybrid_tfrs.config import TrainConfig
    from hybrid_tfrs.preprocess.rows import Columns

    if not FLAGS.input:
        raise ValueError("--input: required (a path or glob of the interaction files)")
    if not FLAGS.output_dir:
        raise ValueError("--output_dir: required (where the prepared data goes)")
    if FLAGS.min_length < 3:
        raise ValueError(f"--min_length={FLAGS.min_length}: must be >= 3 (train, valid, test)")
    if FLAGS.min_item_count < 0:
        raise ValueError(f"--min_item_count={FLAGS.min_item_count}: must be >= 0")
    if FLAGS.num_shards < 0:
        raise ValueError(f"--num_shards={FLAGS.num_shards}: must be >= 0")
    for name in ("user_column", "item_column"):
        if not getattr(FLAGS, name).strip():
            raise ValueError(f"--{name}: must name a column")
    sep = TrainConfig(delimiter=FLAGS.delimiter).delimiter_char
    if sep is not None and len(sep) != 1:
        raise ValueError(f"--delimiter={FLAGS.delimiter!r}: must be one character (or \\t / tab)")
    patterns = [p.strip() for p in FLAGS.input.split(",") if p.strip()]
    columns = Columns(FLAGS.user_column, FLAGS.item_column, FLAGS.time_column)
    return patterns, columns, sep


def match_inputs(patterns, columns, sep):
    """The sorted input paths; ValueError naming a pattern without files or a missing column."""
    from apache_beam.io.filesystems import FileSystems

    from hybrid_tfrs.data.readers import check_columns
    from hybrid_tfrs.preprocess.rows import file_format

    paths = []
    for pattern, result in zip(patterns, FileSystems.match(patterns)):
        matched = sorted(m.path for m in result.metadata_list)
        if not matched:
            raise ValueError(f"--input: no file matches {pattern!r}")
        paths.extend(matched)
    for path in paths:
        kind, file_sep = file_format(path, sep)
        if kind == "jsonl":
            continue  # JSON lines: a row without a field is a dead letter
        try:
            names = _header_names(path, kind, file_sep)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: cannot read its header ({error})") from None
        check_columns(path, names, columns.names)  # DataError, a ValueError
    return paths


def _header_names(path, kind, sep):
    """The column names of a text (header row) or Parquet file; ValueError when it is empty."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from hybrid_tfrs.preprocess.rows import read_header

    with FileSystems.open(path) as f:  # a .gz file is decompressed
        if kind == "parquet":
            try:
                return pq.ParquetFile(f).schema_arrow.names
            except pa.ArrowException as error:
                raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
        return read_header(path, f, sep)


def _check_output_dir(output_dir):
    """A prepared folder must start empty: no old shard may mix in."""
    from apache_beam.io.filesystems import FileSystems

    existing = FileSystems.match([os.path.join(output_dir, "*")])[0].metadata_list
    if existing:
        raise ValueError(
            f"--output_dir={output_dir}: not empty ({len(existing)} files); "
            "prepare into a new folder"
        )


def main(argv):
    """Checks flags, inputs and output folder, then runs the pipeline and prints stats.json."""
    try:
        patterns, columns, sep = _settings()
    except ValueError as error:
        return common.fail(error)
    if not FLAGS.verbose:  # Beam logs its imports and each stage through absl
        absl_logging.set_verbosity(absl_logging.ERROR)
        logging.getLogger("apache_beam").setLevel(logging.ERROR)
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        return common.fail(
            'apache-beam is not installed; pip install "hybrid-tfrs[beam]" '
            "(or make, which installs it)"
        )
    from hybrid_tfrs.preprocess.pipeline import build_pipeline

    try:
        options = PipelineOptions(shlex.split(FLAGS.pipeline_options))
        files = match_inputs(patterns, columns, sep)
        _check_output_dir(FLAGS.output_dir)
    except (ValueError, OSError) as error:
        return common.fail(error)
    started = time.perf_counter()
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(
            pipeline,
            files,
            columns,
            FLAGS.output_dir,
            sep=sep,
            min_length=FLAGS.min_length,
            min_item_count=FLAGS.min_item_count,
            num_shards=FLAGS.num_shards,
        )
    return _report(FLAGS.output_dir, time.perf_counter() - started)


def _report(output_dir, seconds):
    from apache_beam.io.filesystems import FileSystems

    from hybrid_tfrs.data import prepared

    with FileSystems.open(os.path.join(output_dir, prepared.STATS_FILE)) as f:
        stats = json.loads(f.read().decode("utf-8"))
    reasons = stats["dropped"]["malformed_rows"]
    malformed = sum(reasons.values())
    print(
        f"{output_dir}: {stats['users']} users, {stats['items']} items, "
        f"{stats['interactions']} interactions from {stats['rows_read']} rows "
        f"({malformed} malformed, see dead_letter-*.jsonl) in {seconds / 60:.1f} minutes",
        flush=True,
    )
    if stats["users"]:
        return 0
    counted = ", ".join(f"{count} {reason}" for reason, count in reasons.items() if count)
    return common.fail(
        f"{output_dir}: no user kept, so it cannot be trained on. Malformed rows: "
        f"{counted or 'none'}; dead_letter-*.jsonl there holds each with its file and line "
        "(a wrong --time_column, or times that are not numbers, make every row bad_time). "
        f"Users under --min_length={FLAGS.min_length}: "
        f"{stats['dropped']['users_below_min_length']}; events of items under "
        f"--min_item_count={FLAGS.min_item_count}: "
        f"{stats['dropped']['events_of_items_below_min_item_count']}"
    )


def run(argv=None):
    """Console-script entry point of hybrid-tfrs-preprocess."""
    common.run_command(main, sys.modules[__name__], argv)


if __name__ == "__main__":
    run()
