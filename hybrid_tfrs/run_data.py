"""The dataset of a training run, loaded and checked without TensorFlow."""

import hashlib

import numpy as np

from hybrid_tfrs.config import NUM_NEGATIVES
from hybrid_tfrs.data import DATASETS, load_dataset
from hybrid_tfrs.data.own import load_table_split
from hybrid_tfrs.data.prepared import load_prepared


def load_split(config, in_memory=False):
    """The run's dataset: (SequenceData, leave-one-out Split).

    With --prepared_dir: (PreparedData, PreparedSplit), the users' counts read
    in one tf.data pass (imports TensorFlow); their sequences stay in the shards.
    ``in_memory=True`` reads them into a Split instead, for analyses that need
    every test history at once.
    """
    if config.prepared_dir:
        from hybrid_tfrs.data.prepared_pipeline import read_split, streamed_split

        prepared = load_prepared(config.prepared_dir)
        return prepared, (read_split if in_memory else streamed_split)(prepared)
    if config.data_file:
        return load_table_split(
            config.data_file,
            config.user_column,
            config.item_column,
            config.time_column,
            sep=config.delimiter_char,
            min_length=config.min_length,
        )
    synthetic = (
        dict(num_users=config.synthetic_users, num_items=config.synthetic_items, seed=config.seed)
        if config.dataset == "synthetic"
        else {}
    )
    return load_dataset(config.dataset, config.data_dir, min_length=config.min_length, **synthetic)


def data_summary(vocabulary, split, stats):
    """What a run's weights depend on in its data, to refuse a resume on other data:
    {"users", "items", "interactions": int, "sha256": of the item ids in index order
    and the training counts} (``stats``: ``split.stats()``)."""
    digest = hashlib.sha256("\n".join(vocabulary.ids).encode("utf-8"))
    digest.update(np.asarray(split.item_popularity, dtype=np.int64).tobytes())
    return {
        "users": int(stats["users"]),
        "items": int(stats["items"]),
        "interactions": int(stats["interactions"]),
        "sha256": digest.hexdigest(),
    }


def uses_keras_cache(config):
    """Whether loading the dataset goes through keras.utils.get_file (and so TensorFlow)."""
    spec = DATASETS.get(config.dataset)
    return spec is not None and spec.origin is not None and not config.data_dir


def check_sampled_protocols(config, split):
    """Fails before training if a sampled protocol cannot draw its negatives."""
    fewest_unseen = split.num_items - split.most_user_items
    for protocol, needed in NUM_NEGATIVES.items():
        if protocol in config.protocol_list and fewest_unseen < needed:
            raise ValueError(
                f"--protocols: {protocol} needs {needed} unseen items per user, but a user of "
                f"{config.dataset} has only {fewest_unseen}; drop it (e.g. --protocols=full)"
            )
