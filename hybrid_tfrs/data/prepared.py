"""The prepared format that ``hybrid-tfrs-preprocess`` writes and ``--prepared_dir`` reads.

A prepared folder holds::

    users-SSSSS-of-NNNNN.tfrecord   one tf.train.Example per kept user: user_id (bytes),
                                    train (int64 list, seq[:-2]), valid_target (int64,
                                    seq[-2]), test_target (int64, seq[-1])
    vocabulary.txt                  raw item id of index i on line i (most frequent first)
    item_popularity.txt             training count of item i on line i
    stats.json                      users, items, interactions, dropped rows and why
    dead_letter-SSSSS-of-NNNNN.jsonl  the malformed rows, one JSON object each

Reading the metadata needs neither TensorFlow nor Beam.
"""

import glob
import json
import os

import numpy as np

from hybrid_tfrs.data.readers import DataError
from hybrid_tfrs.data.split import sequence_stats
from hybrid_tfrs.data.vocabulary import Vocabulary

__all__ = [
    "DEAD_LETTER_PREFIX",
    "POPULARITY_FILE",
    "PreparedData",
    "PreparedSplit",
    "SHARD_PREFIX",
    "SHARD_SUFFIX",
    "STATS_FILE",
    "VOCABULARY_FILE",
    "load_prepared",
    "shard_pattern",
]

SHARD_PREFIX = "users"
SHARD_SUFFIX = ".tfrecord"
DEAD_LETTER_PREFIX = "dead_letter"
VOCABULARY_FILE = "vocabulary.txt"
POPULARITY_FILE = "item_popularity.txt"
STATS_FILE = "stats.json"


class PreparedData:
    """The metadata of a prepared folder and the paths of its shards.

    Attributes:
        path: the folder.
        shards: sorted paths of the user shards.
        vocabulary: :class:`Vocabulary` of the N items.
        item_popularity: int64 [N + 1], training counts; index 0 is 0.
        stats: the parsed stats.json.
    """

    def __init__(self, path, shards, vocabulary, item_popularity, stats):
        self.path = path
        self.shards = shards
        self.vocabulary = vocabulary
        self.item_popularity = item_popularity
        self.stats = stats

    @property
    def num_items(self):
        return len(self.vocabulary)

    @property
    def num_users(self):
        return int(self.stats["users"])


class PreparedSplit:
    """A prepared folder's users as a run holds them: two counts and an id a user, no sequences.

    Training and evaluation stream the sequences from the shards
    (``hybrid_tfrs.data.prepared_pipeline``); ``prepared_pipeline.streamed_split``
    makes this in one pass. It stands in for a :class:`Split` where a run needs
    the users' number, stats and ``most_user_items``.

    Attributes:
        prepared: the :class:`PreparedData`.
        train_lengths: int64 [U], each user's ``len(train)``, in shard order.
        distinct_items: int64 [U], each user's distinct items, targets included.
        user_ids: [U] raw user ids, in shard order.
    """

    def __init__(self, prepared, train_lengths, distinct_items, user_ids):
        self.prepared = prepared
        self.train_lengths = train_lengths
        self.distinct_items = distinct_items
        self.user_ids = user_ids

    @property
    def num_items(self):
        return self.prepared.num_items

    @property
    def num_users(self):
        return len(self.train_lengths)

    @property
    def item_popularity(self):
        return self.prepared.item_popularity

    @property
    def most_user_items(self):
        """The largest number of distinct items of one user (its targets included)."""
        return int(self.distinct_items.max())

    def stats(self):
        """As :meth:`Split.stats` (the whole sequence is train + the two targets)."""
        skipped = int(self.prepared.stats["dropped"]["users_below_min_length"])
        return sequence_stats(self.prepared.path, self.train_lengths + 2, self.num_items, skipped)


def shard_pattern(folder):
    """The glob of a prepared folder's user shards."""
    return os.path.join(folder, f"{SHARD_PREFIX}-*{SHARD_SUFFIX}")


def load_prepared(folder):
    """Reads a prepared folder's metadata; DataError naming the file at fault."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder (write one with hybrid-tfrs-preprocess)")
    stats_path = os.path.join(folder, STATS_FILE)
    try:
        with open(stats_path, encoding="utf-8") as f:
            stats = json.load(f)
    except FileNotFoundError:
        raise DataError(
            f"{stats_path}: no such file; is {folder} the --output_dir of hybrid-tfrs-preprocess?"
        ) from None
    except ValueError as err:
        raise DataError(f"{stats_path}: not JSON ({err})") from None
    vocabulary = Vocabulary.load(os.path.join(folder, VOCABULARY_FILE))
    popularity_path = os.path.join(folder, POPULARITY_FILE)
    try:
        counts = np.loadtxt(popularity_path, dtype=np.int64, ndmin=1)
    except FileNotFoundError:
        raise DataError(f"{popularity_path}: no such file") from None
    except ValueError as err:
        raise DataError(f"{popularity_path}: not one integer a line ({err})") from None
    if len(counts) != len(vocabulary):
        raise DataError(
            f"{popularity_path}: {len(counts)} counts for the {len(vocabulary)} items of "
            f"{VOCABULARY_FILE}"
        )
    shards = sorted(glob.glob(shard_pattern(folder)))
    if not shards:
        raise DataError(f"{folder}: no {SHARD_PREFIX}-*{SHARD_SUFFIX} shards")
    popularity = np.concatenate([[0], counts]).astype(np.int64)
    return PreparedData(folder, shards, vocabulary, popularity, stats)
