"""The Beam pipeline of hybrid-tfrs-preprocess: own logs -> prepared shards (see data.prepared).

Stages (their names show in a runner's monitoring):

    Match/Read/Parse   files -> events (user, item, time, file, line); malformed rows -> DeadLetter
    ItemCounts         events per item; --min_item_count drops the events of rarer items
    Vocabulary         items by frequency (most frequent = index 1), ties by id
    GroupByUser        each user's events ordered by (time, file, line): stable file order
    Split              users below --min_length dropped; leave-one-out; tf.train.Example
    Write*             users-*.tfrecord, vocabulary.txt, item_popularity.txt, stats.json

The same pipeline runs on the DirectRunner (default) or on Dataflow, Flink or
Spark: pass their options (``--runner=DataflowRunner --project=...``).
"""

import json
import os

import apache_beam as beam
from apache_beam.io import fileio

from hybrid_tfrs.data import prepared
from hybrid_tfrs.preprocess.example import user_example
from hybrid_tfrs.preprocess.rows import REASONS, parse_rows

__all__ = ["build_pipeline"]

_DEAD = "dead"


class _ParseFile(beam.DoFn):
    """A matched file -> events ``(user, (time, file_index, line, item))``, dead letters tagged."""

    def __init__(self, columns, sep, file_index):
        self.columns, self.sep, self.file_index = columns, sep, file_index

    def process(self, readable):
        path = readable.metadata.path
        index = self.file_index[path]
        # AUTO: a .gz file is decompressed, any other read as it is
        with readable.open(compression_type=beam.io.filesystem.CompressionTypes.AUTO) as f:
            for kind, value in parse_rows(path, f, self.columns, self.sep):
                if kind == "event":
                    user, item, time, line = value
                    yield user, (time, index, line, item)
                else:
                    yield beam.pvalue.TaggedOutput(_DEAD, value)


def _order(events):
    """A user's ``(time, file, line, item)`` events -> items by time, equal times in file order."""
    if events and events[0][0] is None:  # no time column: file order
        return [item for _, _, _, item in sorted(events, key=lambda e: (e[1], e[2]))]
    return [item for _, _, _, item in sorted(events, key=lambda e: (e[0], e[1], e[2]))]


def _vocabulary_ids(counts):
    """``[(item, count), ...]`` -> item ids by frequency, ties by id (Vocabulary.by_frequency)."""
    return [item for item, _ in sorted(counts, key=lambda pair: (-pair[1], pair[0]))]


def _encode_split(user_items, index, min_length):
    """``(user, [item, ...])`` -> ("user", example bytes, train indices) or ("short", length)."""
    user, items = user_items
    if len(items) < min_length:
        return "short", len(items)
    sequence = [index[item] for item in items]
    return "user", user_example(user, sequence[:-2], sequence[-2], sequence[-1]), sequence[:-2]


def _count(pcoll, label, key):
    return (
        pcoll
        | f"Count{label}" >> beam.combiners.Count.Globally()
        | f"Key{label}" >> beam.Map(lambda n: (key, n))
    )


def build_pipeline(
    pipeline, files, columns, output_dir, sep=None, min_length=3, min_item_count=0, num_shards=0
):
    """Adds the stages to ``pipeline``; running it writes ``output_dir``.

    Args:
        pipeline: a ``beam.Pipeline``.
        files: the input paths (globs already matched), read in this order for ties.
        columns: :class:`hybrid_tfrs.preprocess.rows.Columns`.
        output_dir: the prepared folder (see hybrid_tfrs.data.prepared).
        sep: field separator of text files; None: by extension.
        min_length: users with fewer events (after the item filter) are dropped.
        min_item_count: events of items seen fewer times are dropped (0 or 1: none).
        num_shards: user shards to write; 0 lets the runner choose.
    """
    file_index = {path: i for i, path in enumerate(files)}
    parsed = (
        pipeline
        | "Match" >> beam.Create(files)
        | "MatchFiles" >> fileio.MatchAll()
        | "Read" >> fileio.ReadMatches()
        | "Parse"
        >> beam.ParDo(_ParseFile(columns, sep, file_index)).with_outputs(_DEAD, main="events")
    )
    events, dead = parsed.events, parsed[_DEAD]
    _ = (
        dead
        | "DeadLetterJson" >> beam.Map(json.dumps)
        | "WriteDeadLetter"
        >> beam.io.WriteToText(
            os.path.join(output_dir, prepared.DEAD_LETTER_PREFIX), file_name_suffix=".jsonl"
        )
    )
    item_counts = (
        events
        | "Items" >> beam.Map(lambda event: event[1][3])
        | "ItemCounts" >> beam.combiners.Count.PerElement()
    )
    if min_item_count > 1:
        rare = beam.pvalue.AsDict(
            item_counts | "RareItems" >> beam.Filter(lambda pair: pair[1] < min_item_count)
        )
        kept_events = events | "DropRareItems" >> beam.Filter(
            lambda event, rare: event[1][3] not in rare, rare=rare
        )
        item_counts = item_counts | "KeptItems" >> beam.Filter(
            lambda pair: pair[1] >= min_item_count
        )
    else:
        kept_events = events
    vocabulary = (
        item_counts
        | "AllCounts" >> beam.combiners.ToList()
        | "Vocabulary" >> beam.Map(_vocabulary_ids)
    )
    index = beam.pvalue.AsSingleton(
        vocabulary | "Index" >> beam.Map(lambda ids: {item: i for i, item in enumerate(ids, 1)})
    )
    _ = (
        vocabulary
        | "VocabularyText" >> beam.Map(lambda ids: "\n".join(ids))
        | "WriteVocabulary" >> _write_one(output_dir, prepared.VOCABULARY_FILE)
    )
    split = (
        kept_events
        | "GroupByUser" >> beam.GroupByKey()
        | "Order" >> beam.MapTuple(lambda user, events: (user, _order(list(events))))
        | "Split" >> beam.Map(_encode_split, index=index, min_length=min_length)
    )
    users = split | "KeptUsers" >> beam.Filter(lambda out: out[0] == "user")
    short = split | "ShortUsers" >> beam.Filter(lambda out: out[0] == "short")
    _ = (
        users
        | "Examples" >> beam.Map(lambda out: out[1])
        | "WriteUsers"
        >> beam.io.WriteToTFRecord(
            os.path.join(output_dir, prepared.SHARD_PREFIX),
            file_name_suffix=prepared.SHARD_SUFFIX,
            num_shards=num_shards,
        )
    )
    train_counts = (
        users
        | "TrainItems" >> beam.FlatMap(lambda out: out[2])
        | "TrainCounts" >> beam.combiners.Count.PerElement()
        | "AllTrainCounts" >> beam.combiners.ToDict()
    )
    _ = (
        vocabulary
        | "Popularity"
        >> beam.Map(
            lambda ids, counts: "\n".join(str(counts.get(i, 0)) for i in range(1, len(ids) + 1)),
            counts=beam.pvalue.AsSingleton(train_counts),
        )
        | "WritePopularity" >> _write_one(output_dir, prepared.POPULARITY_FILE)
    )
    lengths = users | "Lengths" >> beam.Map(lambda out: len(out[2]) + 2)
    counts = [
        _count(events, "Rows", "events_read"),
        _count(users, "Users", "users"),
        _count(short, "Short", "dropped_users_below_min_length"),
        _count(dead, "Dead", "malformed_rows"),
        vocabulary | "NumItems" >> beam.Map(lambda ids: ("items", len(ids))),
        lengths
        | "Interactions" >> beam.CombineGlobally(sum)
        | "KeyInteractions" >> beam.Map(lambda n: ("interactions", n)),
        short
        | "ShortLengths" >> beam.Map(lambda out: out[1])
        | "ShortEvents" >> beam.CombineGlobally(sum)
        | "KeyShortEvents" >> beam.Map(lambda n: ("dropped_events_of_short_users", n)),
        kept_events
        | "CountKept" >> beam.combiners.Count.Globally()
        | "KeyKept" >> beam.Map(lambda n: ("events_after_item_filter", n)),
    ]
    reasons = (
        dead
        | "Reasons" >> beam.Map(lambda letter: letter["reason"])
        | "CountReasons" >> beam.combiners.Count.PerElement()
        | "ReasonDict" >> beam.combiners.ToDict()
    )
    settings = {
        "files": files,
        "columns": {"user": columns.user, "item": columns.item, "time": columns.time},
        "min_length": min_length,
        "min_item_count": min_item_count,
    }
    _ = (
        counts
        | "AllStats" >> beam.Flatten()
        | "StatsDict" >> beam.combiners.ToDict()
        | "StatsJson"
        >> beam.Map(_stats_json, reasons=beam.pvalue.AsSingleton(reasons), settings=settings)
        | "WriteStats" >> _write_one(output_dir, prepared.STATS_FILE)
    )


def _stats_json(counts, reasons, settings):
    """stats.json: the counts, the dropped rows and why, and the settings that made them."""
    stats = {
        "users": counts["users"],
        "items": counts["items"],
        "interactions": counts["interactions"],
        "rows_read": counts["events_read"] + counts["malformed_rows"],
        "dropped": {
            "malformed_rows": {reason: reasons.get(reason, 0) for reason in REASONS},
            "events_of_items_below_min_item_count": counts["events_read"]
            - counts["events_after_item_filter"],
            "users_below_min_length": counts["dropped_users_below_min_length"],
            "events_of_users_below_min_length": counts["dropped_events_of_short_users"],
        },
        **settings,
    }
    return json.dumps(stats, indent=2)


def _write_one(output_dir, name):
    """Writes a one-element PCollection of text as exactly ``output_dir/name``."""
    return beam.io.WriteToText(os.path.join(output_dir, name), shard_name_template="")
