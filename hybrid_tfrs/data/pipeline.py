"""Padded arrays and the tf.data training pipeline.

Layout everywhere: left-aligned, right-padded with 0. A row holds the latest
``max_len`` items of a sequence, the oldest kept item at position 0.
"""

import numpy as np
import tensorflow as tf

from hybrid_tfrs.data.readers import DataError

__all__ = ["pad_latest", "training_examples", "training_dataset"]


def pad_latest(sequences, max_len):
    """Keeps each sequence's latest ``max_len`` items, left-aligned, 0-padded on the right.

    Args:
        sequences: U int arrays (any lengths, 0 allowed).
        max_len: L, at least 1.

    Returns:
        np.int32 [U, L].
    """
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    lengths = np.fromiter((len(sequence) for sequence in sequences), dtype=np.int64)
    out = np.zeros((len(lengths), max_len), dtype=np.int32)
    kept = np.minimum(lengths, max_len)
    if kept.sum() == 0:
        return out
    flat = np.concatenate([np.asarray(sequence, dtype=np.int32) for sequence in sequences])
    rows = np.repeat(np.arange(len(lengths)), kept)
    row_starts = np.cumsum(kept) - kept
    cols = np.arange(kept.sum()) - np.repeat(row_starts, kept)
    first_kept = np.cumsum(lengths) - kept  # flat position of each row's oldest kept item
    out[rows, cols] = flat[np.repeat(first_kept, kept) + cols]
    return out


def training_examples(train_sequences, max_len):
    """Next-item examples at every position: ``inputs = t[:-1]``, ``targets = t[1:]``.

    Both are cut to their latest ``max_len`` items and laid out by :func:`pad_latest`,
    so ``targets[u, j]`` is the item that follows ``inputs[u, j]``; target 0 means no
    loss. Sequences with fewer than 2 items give no example.

    Returns:
        ``(inputs, targets)``, np.int32 [U', L] each, U' = users with >= 2 items.
    """
    usable = [sequence for sequence in train_sequences if len(sequence) >= 2]
    inputs = pad_latest([sequence[:-1] for sequence in usable], max_len)
    targets = pad_latest([sequence[1:] for sequence in usable], max_len)
    return inputs, targets


def training_dataset(
    train_sequences, max_len, batch_size, seed=0, shuffle=True, drop_remainder=False
):
    """A tf.data.Dataset of ``(inputs, targets)`` int32 batches [B, L].

    The examples are those of :func:`training_examples`; with ``shuffle`` they
    come in a new order each epoch, fixed by ``seed``. Batches are prefetched.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    inputs, targets = training_examples(train_sequences, max_len)
    if len(inputs) == 0:
        raise DataError("no training examples: every training sequence has fewer than 2 items")
    if drop_remainder and len(inputs) < batch_size:
        raise DataError(
            f"{len(inputs)} training examples, fewer than batch_size={batch_size} "
            "with drop_remainder=True: no batch at all"
        )
    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets))
    if shuffle:
        dataset = dataset.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
