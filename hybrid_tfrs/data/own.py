"""The user's own interaction table (``--data_file``): read, numbered by frequency, split.

Needs no TensorFlow. Items are numbered by :meth:`Vocabulary.by_frequency`, as
the Beam pipeline (``hybrid-tfrs-preprocess``) numbers them, so both ways of
reading the same events give the same split and the same item indices.
"""

import os

from hybrid_tfrs.data.readers import read_table
from hybrid_tfrs.data.split import encode_dataset, leave_one_out
from hybrid_tfrs.data.vocabulary import Vocabulary

__all__ = ["load_table_split"]


def load_table_split(path, user_column, item_column, time_column=None, sep=None, min_length=3):
    """Reads an interaction table and splits it leave-one-out.

    Args:
        path: CSV / TSV / Parquet / JSON-lines file (see :func:`read_table`).
        user_column, item_column: column names of the user and item ids.
        time_column: numeric column ordering each user's events (equal times
            keep file order); None or "": file order.
        sep: field separator of a text file; None: by the extension.
        min_length: users with fewer events are skipped (and counted).

    Returns:
        ``(SequenceData, Split)``; the dataset is named after the file.
    """
    path = os.fspath(path)
    raw = read_table(path, user_column, item_column, time_column or None, sep=sep)
    vocabulary = Vocabulary.by_frequency(items for _, items in raw)
    data = encode_dataset(raw, os.path.basename(path), vocabulary=vocabulary)
    return data, leave_one_out(data, min_length=min_length)
