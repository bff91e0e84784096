"""The tf.data training pipeline over the examples of hybrid_tfrs.data.examples.

Layout everywhere: left-aligned, right-padded with 0. A row holds the latest
``max_len`` items of a sequence, the oldest kept item at position 0.
"""

import numpy as np
import tensorflow as tf

from hybrid_tfrs.data.examples import (
    batch_widths,
    length_buckets,
    pad_latest,
    training_examples,
)
from hybrid_tfrs.data.readers import DataError

__all__ = [
    "batch_widths",
    "last_position_dataset",
    "pad_latest",
    "training_dataset",
    "training_examples",
    "without_autotuning",
]


def without_autotuning(dataset):
    """``dataset`` with tf.data's autotuning off (a tf.data.Dataset, any element).

    Autotuning runs a background thread that wakes at doubling intervals (10 ms,
    20 ms, 40 ms, ...), and deleting an iterator waits for that thread's next
    wake-up. Keras makes a new iterator every epoch, so an epoch could end only at
    a wake-up: on one core LinRec's training steps on Beauty took 41.0 s
    (10 ms x (2^12 - 1) = 40.95 s) in both timed epochs, 23.1 and 23.4 s without
    autotuning (benchmarks/results/epoch_cost.md). These pipelines cost little next
    to a training step (a Beauty epoch of batches is read in about 0.1 s); without
    autotuning their AUTOTUNE settings take tf.data's static defaults.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _trim_to_bucket(widths):
    """Maps a batch [B, max_len] of one bucket to [B, widths[bucket]], dropping the bucket ids."""
    widths = tf.constant(widths, tf.int32)

    def trim(inputs, targets, buckets):
        width = widths[buckets[0]]
        return inputs[:, :width], targets[:, :width]

    return trim


def _pad_rows_to(batch_size):
    def pad(inputs, targets):
        missing = [[0, batch_size - tf.shape(inputs)[0]], [0, 0]]
        return tf.pad(inputs, missing), tf.pad(targets, missing)

    return pad


def skip_epochs(dataset, epochs):
    """``dataset`` (the same object) advanced past its first ``epochs`` epochs.

    Every new iterator of a ``shuffle(..., reshuffle_each_iteration=True)``
    draws the next order from the dataset's seed, and a training run takes one
    iterator an epoch (``dataset.repeat()`` makes one per repetition): opening
    ``epochs`` of them gives a resumed run the orders an uninterrupted one
    would see from there on. Each is read for one batch, because a pipeline
    opens some inner iterators only then (the shard order of the streamed
    pipeline: data.prepared_pipeline); that costs one shuffle buffer an epoch.
    """
    for _ in range(epochs):
        next(iter(dataset))
    return dataset


def training_dataset(
    train_sequences,
    max_len,
    batch_size,
    seed=0,
    shuffle=True,
    drop_remainder=False,
    bucket_by_length=False,
    window_stride=0,
    bucket_widths=None,
):
    """A tf.data.Dataset of ``(inputs, targets)`` int32 batches [B, L].

    The examples are those of :func:`training_examples` (``window_stride`` is
    passed on: 0 trains each sequence's latest ``max_len`` targets only); with ``shuffle`` they
    come in a new order each epoch, fixed by ``seed``. Batches are prefetched.

    With ``bucket_by_length``, rows of similar length are batched together and
    each batch is cut to the smallest of :func:`batch_widths` (``bucket_widths``
    below ``max_len``, default 8, 16, 32, ...) that holds its longest row (so
    L <= max_len varies between batches), and short batches are filled up to
    ``batch_size`` with all-padding rows (which carry no loss). Causal encoders
    give the same outputs either way; short histories (e.g. Amazon data) then
    cost a fraction of the full width.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    inputs, targets = training_examples(train_sequences, max_len, window_stride)
    if len(inputs) == 0:
        raise DataError("no training examples: every training sequence has fewer than 2 items")
    if drop_remainder and len(inputs) < batch_size:
        raise DataError(
            f"{len(inputs)} training examples, fewer than batch_size={batch_size} "
            "with drop_remainder=True: no batch at all"
        )
    if bucket_by_length:
        widths = batch_widths(max_len, bucket_widths)
        # Row -> index of the smallest width that holds it, computed once here.
        buckets = length_buckets(inputs, widths)
        dataset = tf.data.Dataset.from_tensor_slices((inputs, targets, buckets))
    else:
        dataset = tf.data.Dataset.from_tensor_slices((inputs, targets))
    if shuffle:
        dataset = dataset.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
    if bucket_by_length:
        dataset = dataset.group_by_window(
            lambda inputs, targets, bucket: bucket,
            lambda _, window: window.batch(batch_size, drop_remainder=drop_remainder),
            window_size=batch_size,
        ).map(_trim_to_bucket(widths))
        # group_by_window hides the number of batches; stating it gives Keras a
        # progress bar with a total from the first epoch (no "ran out of data" warning).
        per_bucket = np.bincount(buckets)
        rounding = np.floor if drop_remainder else np.ceil
        num_batches = int(rounding(per_bucket / batch_size).sum())
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
        if not drop_remainder:
            # A bucket's last batch is short, and its size changes every epoch;
            # all-padding rows (no targets, so no loss) keep the batch size fixed
            # so that a compiled step is traced once per width, not per epoch.
            dataset = dataset.map(_pad_rows_to(batch_size))
    else:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return without_autotuning(dataset.prefetch(tf.data.AUTOTUNE))


def last_position_dataset(train_sequences, max_len, batch_size, seed=0, shuffle=True):
    """One example per prefix, the loss on its last position only (the papers' recipe).

    For every training sequence t and every 1 <= j < len(t): inputs = the latest
    ``max_len`` items of ``t[:j]`` (left-aligned, right-padded), targets = 0
    except ``t[j]`` at the last item's position. This is how RecBole trains
    SASRec / FMLP-Rec / LinRec, and what bidirectional (``causal=False``)
    encoders need, since they would see later targets otherwise. Windows are cut
    on the fly from one flat array, so memory stays O(interactions).

    Returns:
        tf.data.Dataset of ``(inputs, targets)`` int32 batches [B, max_len].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lengths = np.array([len(sequence) for sequence in train_sequences], dtype=np.int64)
    if not (lengths >= 2).any():
        raise DataError("no training examples: every training sequence has fewer than 2 items")
    flat = np.concatenate([np.asarray(s, dtype=np.int32) for s in train_sequences])
    row_starts = np.cumsum(lengths) - lengths
    # Flat index of every target: positions 1..len-1 of each row.
    num_targets = np.maximum(lengths - 1, 0)
    ends = (
        np.repeat(row_starts, num_targets)
        + (
            np.arange(num_targets.sum())
            - np.repeat(np.cumsum(num_targets) - num_targets, num_targets)
        )
        + 1
    )
    starts = np.maximum(np.repeat(row_starts, num_targets), ends - max_len)
    flat_tensor = tf.constant(flat)

    def window(start, end):
        items = flat_tensor[start:end]
        width = tf.cast(end - start, tf.int32)
        inputs = tf.pad(items, [[0, max_len - width]])
        targets = tf.scatter_nd([[width - 1]], [flat_tensor[end]], [max_len])
        return inputs, targets

    dataset = tf.data.Dataset.from_tensor_slices((starts, ends))
    if shuffle:
        dataset = dataset.shuffle(len(ends), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(window, num_parallel_calls=tf.data.AUTOTUNE)
    return without_autotuning(dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE))
