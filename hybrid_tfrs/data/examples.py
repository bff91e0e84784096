"""Next-item training examples as padded numpy arrays (no TensorFlow).

Layout everywhere: left-aligned, right-padded with 0. A row holds the latest
``max_len`` items of a sequence, the oldest kept item at position 0. The
tf.data pipeline (hybrid_tfrs.data.pipeline) batches these arrays; a trainer
on another backend can batch them itself.
"""

import numpy as np

__all__ = [
    "batch_widths",
    "bucketed_batch_rows",
    "length_buckets",
    "pad_latest",
    "training_examples",
]


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


def training_examples(train_sequences, max_len, window_stride=0):
    """Next-item examples at every position: ``inputs = t[:-1]``, ``targets = t[1:]``.

    With ``window_stride=0`` each sequence gives one row: its latest ``max_len``
    (input, target) pairs, so the older targets of a longer sequence are never
    trained. With ``window_stride=s`` (1 <= s <= max_len) a longer sequence
    gives more rows, windows of ``max_len`` pairs ending at m, m - s, m - 2s, ...
    (m = len(t) - 1), until one reaches the sequence's start. Each window keeps
    the loss on its last ``s`` targets only (the rest are set to 0), the
    oldest window on all its targets not trained elsewhere: every target is
    trained exactly once, with at least ``max_len - s`` items of context unless
    it is among the sequence's first ``max_len``.

    Rows are laid out by :func:`pad_latest`: ``targets[r, j]`` is the item that
    follows ``inputs[r, j]``; target 0 means no loss. Sequences with fewer than
    2 items give no example.

    Returns:
        ``(inputs, targets)``, np.int32 [R, L] each; R = users with >= 2 items
        when ``window_stride=0``.
    """
    if not 0 <= window_stride <= max_len:
        raise ValueError(f"window_stride must be in 0..max_len={max_len}, got {window_stride}")
    input_rows, target_rows = [], []
    for sequence in (np.asarray(s, dtype=np.int32) for s in train_sequences if len(s) >= 2):
        end = len(sequence) - 1  # number of (input, target) pairs
        while True:
            start = max(0, end - max_len)
            targets = sequence[start + 1 : end + 1].copy()
            if start > 0 and window_stride:
                targets[:-window_stride] = 0  # trained in a later window, with more context
            input_rows.append(sequence[start:end])
            target_rows.append(targets)
            if start == 0 or not window_stride:
                break
            end -= window_stride
    return pad_latest(input_rows, max_len), pad_latest(target_rows, max_len)


def batch_widths(max_len, widths=None):
    """Batch widths for length bucketing: ``widths`` below max_len, then max_len.

    ``widths`` (increasing ints) defaults to 8, 16, 32, ...: finer widths pad
    short histories less, at one compiled training step per width.
    """
    if widths is None:
        widths = [8 * 2**i for i in range(32)]
    return [w for w in widths if w < max_len] + [max_len]


def length_buckets(rows, widths):
    """int64 [R]: for each left-aligned row of ``rows`` (int [R, L]), the index in
    ``widths`` (:func:`batch_widths`) of the smallest width that holds its items."""
    return np.searchsorted(widths[:-1], np.count_nonzero(rows, axis=1)).astype(np.int64)


def bucketed_batch_rows(buckets, batch_size, rng):
    """One epoch's batches of row indices, each batch from one length bucket.

    ``buckets`` (int [R]) is each row's bucket (:func:`length_buckets`). Each
    bucket's rows are shuffled by ``rng`` (a numpy Generator) and cut into
    batches of ``batch_size`` (the last one of a bucket shorter), and the
    batches of all buckets come in a shuffled order: the batches tf.data's
    ``group_by_window`` makes in the pipeline, for a trainer without TensorFlow.

    Returns:
        A list of int64 arrays of row indices; every row is in exactly one.
    """
    batches = []
    for bucket in np.unique(buckets):
        rows = rng.permutation(np.flatnonzero(buckets == bucket))
        batches += [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
