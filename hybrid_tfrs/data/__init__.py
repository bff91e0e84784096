"""Data: readers, vocabulary, leave-one-out split, training examples, tf.data pipeline,
named datasets.

Reading, splitting and the padded examples need only numpy; ``training_dataset``
(the tf.data pipeline) imports TensorFlow on first use.
"""

import importlib

from hybrid_tfrs.data.datasets import DATASETS, DatasetSpec, load_dataset, load_raw
from hybrid_tfrs.data.examples import pad_latest, training_examples
from hybrid_tfrs.data.readers import (
    DataError,
    DatasetNotFoundError,
    read_movielens_ratings,
    read_s3rec,
    read_sasrec,
    read_table,
)
from hybrid_tfrs.data.split import SequenceData, Split, encode_dataset, leave_one_out
from hybrid_tfrs.data.synthetic import SYNTHETIC_DEFAULTS, generate_synthetic
from hybrid_tfrs.data.vocabulary import PADDING_INDEX, Vocabulary

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "PADDING_INDEX",
    "SYNTHETIC_DEFAULTS",
    "SequenceData",
    "Split",
    "Vocabulary",
    "encode_dataset",
    "generate_synthetic",
    "leave_one_out",
    "load_dataset",
    "load_raw",
    "pad_latest",
    "read_movielens_ratings",
    "read_s3rec",
    "read_sasrec",
    "read_table",
    "training_dataset",
    "training_examples",
]


def __getattr__(name):
    if name == "training_dataset":  # TensorFlow, imported on first use
        return getattr(importlib.import_module("hybrid_tfrs.data.pipeline"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
