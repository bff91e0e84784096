"""tf.data over prepared shards (hybrid-tfrs-preprocess output): streamed training and evaluation.

The training examples and batches are those of hybrid_tfrs.data.pipeline
(same windows, same length buckets, same padding), cut from each user's
sequence inside the tf.data graph: no array of all examples is built in Python.
Evaluation reads the users in batches too (:func:`streamed_eval_dataset`, for
``hybrid_tfrs.evaluation.evaluate_batches``); a run keeps only two counts per
user (:func:`streamed_split`).
"""

import numpy as np
import tensorflow as tf

from hybrid_tfrs.data.pipeline import (
    _pad_rows_to,
    _trim_to_bucket,
    batch_widths,
    without_autotuning,
)
from hybrid_tfrs.data.prepared import PreparedSplit
from hybrid_tfrs.data.readers import DataError
from hybrid_tfrs.data.split import Split

__all__ = ["read_split", "streamed_eval_dataset", "streamed_split", "streamed_training_dataset"]

_SPEC = {
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "train": tf.io.RaggedFeature(tf.int64),
    "valid_target": tf.io.FixedLenFeature([], tf.int64),
    "test_target": tf.io.FixedLenFeature([], tf.int64),
}
_PARSE_BATCH = 1024


def _parsed_batches(shards, shuffle_seed=None, batch_size=_PARSE_BATCH):
    """Batches of parsed users: user_id [B], train ragged [B, None] int32, targets [B].

    Shards are read in parallel (interleaved); with ``shuffle_seed`` their order
    changes every iteration, otherwise the users come in shard order.
    """
    files = tf.data.Dataset.from_tensor_slices(list(shards))
    if shuffle_seed is not None:
        files = files.shuffle(len(shards), seed=shuffle_seed, reshuffle_each_iteration=True)
    records = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(shards), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )

    def parse(serialized):
        users = tf.io.parse_example(serialized, _SPEC)
        users["train"] = tf.cast(users["train"], tf.int32)
        return users

    return records.batch(batch_size).map(
        parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def _appended(rows, column):
    """Ragged [B, None] ``rows`` with ``column`` [B] appended to each row."""
    column = tf.RaggedTensor.from_tensor(
        tf.cast(column, rows.dtype)[:, None], row_splits_dtype=rows.row_splits.dtype
    )
    return tf.concat([rows, column], axis=1)


def _sequences(users):
    """Ragged [B, None] int32: each parsed user's whole sequence, train + both targets."""
    return _appended(_appended(users["train"], users["valid_target"]), users["test_target"])


def read_split(prepared):
    """The leave-one-out :class:`Split` of a prepared folder, users in shard order (numpy).

    Every sequence in memory: runs use :func:`streamed_split` instead; this is the
    in-memory reference that tests and benchmarks compare the streamed path with.
    """
    user_ids, train, valid, test = [], [], [], []
    for batch in _parsed_batches(prepared.shards).as_numpy_iterator():
        user_ids.extend(raw.decode("utf-8") for raw in batch["user_id"])
        train.extend(batch["train"])  # ragged -> an object array of int32 rows
        valid.append(batch["valid_target"])
        test.append(batch["test_target"])
    if not user_ids:
        raise DataError(f"{prepared.path}: the shards hold no users")
    valid = np.concatenate(valid).astype(np.int32)
    test = np.concatenate(test).astype(np.int32)
    return Split(
        user_ids=user_ids,
        train=train,
        valid_histories=train,
        valid_targets=valid,
        test_histories=[np.append(t, v).astype(np.int32) for t, v in zip(train, valid)],
        test_targets=test,
        user_items=[np.unique(np.append(t, [v, s])) for t, v, s in zip(train, valid, test)],
        item_popularity=prepared.item_popularity,
        num_items=prepared.num_items,
        skipped_users=int(prepared.stats["dropped"]["users_below_min_length"]),
        name=prepared.path,
    )


def _row_widths(lengths, max_len, window_stride, causal):
    """int64 [R]: the number of items of every training row (pipeline.training_examples)."""
    pairs = np.maximum(np.asarray(lengths, np.int64) - 1, 0)
    if not causal:  # one row per prefix t[:j], j = 1..pairs
        return np.concatenate([np.minimum(np.arange(1, m + 1), max_len) for m in pairs if m])
    pairs = pairs[pairs > 0]
    if not window_stride:
        return np.minimum(pairs, max_len)
    rows = 1 + -(-np.maximum(pairs - max_len, 0) // window_stride)
    # Windows end at m, m - s, ...: all max_len wide but the oldest, m - (rows - 1) s.
    oldest = np.minimum(pairs - (rows - 1) * window_stride, max_len)
    widths = np.full(rows.sum(), max_len, dtype=np.int64)
    widths[np.cumsum(rows) - 1] = oldest
    return widths


def _batch_rows(max_len, window_stride, causal, bucket_limits=None):
    """Parsed users -> their training rows, cut for a whole parse batch at once.

    Maps ``train`` (ragged [B, None] int32) to ``(inputs, targets)`` int32
    [R, max_len] (plus the length bucket of each row, int64 [R], with
    ``bucket_limits``): the rows of ``pipeline.training_examples`` (causal) or
    one row per prefix with the loss on its last position, users in batch order.
    """
    positions = tf.range(max_len)

    def rows(train):
        pairs = tf.maximum(tf.cast(train.row_lengths(), tf.int32) - 1, 0)
        if causal:
            older = 0  # windows before the latest one
            if window_stride:
                older = (tf.maximum(pairs - max_len, 0) + window_stride - 1) // window_stride
            counts = tf.where(pairs > 0, 1 + older, 0)
        else:
            counts = pairs
        user = tf.repeat(tf.range(tf.shape(pairs)[0]), counts)  # [R]
        window = tf.range(tf.reduce_sum(counts)) - tf.gather(
            tf.cumsum(counts, exclusive=True), user
        )
        user_pairs = tf.gather(pairs, user)
        # Causal: windows end at m, m - s, ...; bidirectional: at every prefix end 1..m.
        ends = user_pairs - window * window_stride if causal else window + 1
        starts = tf.maximum(ends - max_len, 0)
        widths = ends - starts
        if causal:
            keeps = tf.where((starts > 0) & (window_stride > 0), window_stride, widths)
        else:
            keeps = tf.ones_like(widths)
        first = tf.gather(tf.cast(train.row_splits[:-1], tf.int32), user) + starts
        last = tf.gather(tf.cast(train.row_splits[:-1], tf.int32), user) + user_pairs
        index = first[:, None] + positions[None, :]
        inside = positions[None, :] < widths[:, None]
        values = train.values
        inputs = tf.where(inside, tf.gather(values, tf.minimum(index, last[:, None])), 0)
        targets = tf.where(
            inside & (positions[None, :] >= (widths - keeps)[:, None]),
            tf.gather(values, tf.minimum(index + 1, last[:, None])),
            0,
        )
        if bucket_limits is None:
            return inputs, targets
        limits = tf.constant(bucket_limits, tf.int32)
        buckets = tf.reduce_sum(tf.cast(limits[None, :] < widths[:, None], tf.int64), axis=1)
        return inputs, targets, buckets

    return rows


def streamed_training_dataset(
    prepared,
    lengths,
    max_len,
    batch_size,
    seed=0,
    shuffle=True,
    bucket_by_length=False,
    window_stride=0,
    causal=True,
    shuffle_buffer=100_000,
    bucket_widths=None,
):
    """The batches of pipeline.training_dataset (causal) or last_position_dataset, streamed.

    Args:
        prepared: :class:`hybrid_tfrs.data.prepared.PreparedData`.
        lengths: int64 [U], the users' training lengths
            (``streamed_split(prepared).train_lengths``), for the number of batches.
        bucket_widths: widths below ``max_len`` of the length buckets
            (pipeline.batch_widths; None = 8, 16, 32, ...).
        shuffle_buffer: rows shuffled together. When it holds every row, the
            order of the users is the shard order, and the batches are exactly
            those of the in-memory pipeline on :func:`read_split`'s users;
            larger data also shuffles the shard order each epoch.

    Returns:
        ``(dataset, num_targets)``: tf.data.Dataset of ``(inputs, targets)``
        int32 batches [B, L'] (its cardinality set), and the targets of an epoch.
    """
    widths = _row_widths(lengths, max_len, window_stride, causal)
    if len(widths) == 0:
        raise DataError("no training examples: every training sequence has fewer than 2 items")
    buffer = min(len(widths), shuffle_buffer)
    shard_seed = seed if shuffle and buffer < len(widths) else None
    bucketed = causal and bucket_by_length
    limits = batch_widths(max_len, bucket_widths)
    cut = _batch_rows(max_len, window_stride, causal, limits[:-1] if bucketed else None)
    rows = (
        _parsed_batches(prepared.shards, shard_seed)
        .map(
            lambda users: cut(users["train"]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .unbatch()
    )
    if shuffle:
        rows = rows.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if bucketed:
        rows = rows.group_by_window(
            lambda inputs, targets, bucket: bucket,
            lambda _, window: window.batch(batch_size),
            window_size=batch_size,
        ).map(_trim_to_bucket(limits))
        per_bucket = np.bincount(np.searchsorted(limits[:-1], widths))
        num_batches = int(np.ceil(per_bucket / batch_size).sum())
        rows = rows.apply(tf.data.experimental.assert_cardinality(num_batches))
        rows = rows.map(_pad_rows_to(batch_size))
    else:
        num_batches = int(np.ceil(len(widths) / batch_size))
        rows = rows.batch(batch_size).apply(tf.data.experimental.assert_cardinality(num_batches))
    pairs = np.maximum(np.asarray(lengths, np.int64) - 1, 0)
    if not causal:
        num_targets = len(widths)  # one target a row
    elif window_stride:
        num_targets = int(pairs.sum())  # every target once
    else:
        num_targets = int(widths.sum())  # the latest max_len targets
    return without_autotuning(rows.prefetch(tf.data.AUTOTUNE)), num_targets


def streamed_split(prepared):
    """The :class:`PreparedSplit` of a prepared folder, in one pass over its shards.

    Keeps two int64 [U] counts (training lengths, distinct items) and the user
    ids (for the per-user ranks a run writes), users in shard order.
    """
    keys = prepared.num_items + 1

    def counts(users):
        sequences = _sequences(users)
        rows = tf.cast(sequences.value_rowids(), tf.int64)
        pairs = tf.unique(rows * keys + tf.cast(sequences.values, tf.int64)).y
        rows = tf.cast(pairs // keys, tf.int32)  # one per distinct (user, item)
        size = tf.shape(users["valid_target"])[0]
        distinct = tf.math.bincount(rows, minlength=size, maxlength=size, dtype=tf.int64)
        return users["train"].row_lengths(), distinct, users["user_id"]

    lengths, distinct, user_ids = [], [], []
    for batch_lengths, batch_distinct, batch_users in (
        _parsed_batches(prepared.shards).map(counts).as_numpy_iterator()
    ):
        lengths.append(batch_lengths)
        distinct.append(batch_distinct)
        user_ids.extend(raw.decode("utf-8") for raw in batch_users)
    if not lengths:
        raise DataError(f"{prepared.path}: the shards hold no users")
    return PreparedSplit(
        prepared,
        np.concatenate(lengths).astype(np.int64),
        np.concatenate(distinct).astype(np.int64),
        user_ids,
    )


def streamed_eval_dataset(prepared, part, max_len, batch_size):
    """The users of ``part`` ("valid" or "test"), ``batch_size`` at a time, for evaluation.

    The batches of ``hybrid_tfrs.evaluation.evaluate_batches``, users in shard
    order (that of :func:`read_split`): the history is ``train`` (plus the
    valid target for "test"), the target ``seq[-2]`` or ``seq[-1]``.

    Returns:
      tf.data.Dataset of dicts, B users each: ``histories`` int32 [B, max_len]
      (the history's latest max_len items, left-aligned, 0-padded),
      ``targets`` int64 [B], ``lengths`` int64 [B] (whole history),
      ``items`` int32 [P] / ``item_offsets`` [B + 1] (whole sequence),
      ``seen`` int32 [S] / ``seen_offsets`` [B + 1] (whole history).
    """
    if part not in ("valid", "test"):
        raise ValueError(f"part must be 'valid' or 'test', got {part!r}")

    def batch(users):
        history = users["train"]
        if part == "test":
            history = _appended(history, users["valid_target"])
        items = _sequences(users)
        return {
            "histories": history[:, -max_len:].to_tensor(0, shape=[None, max_len]),
            "targets": users[f"{part}_target"],
            "lengths": history.row_lengths(),
            "items": items.values,
            "item_offsets": items.row_splits,
            "seen": history.values,
            "seen_offsets": history.row_splits,
        }

    users = _parsed_batches(prepared.shards, batch_size=batch_size)
    batches = users.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return without_autotuning(batches.prefetch(tf.data.AUTOTUNE))
