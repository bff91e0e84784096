"""Length-bucketed and last-position training pipelines."""

import numpy as np
import pytest

from hybrid_tfrs.data import DataError
from hybrid_tfrs.data.pipeline import (
    batch_widths,
    last_position_dataset,
    skip_epochs,
    training_dataset,
    training_examples,
)

RNG = np.random.default_rng(4)


def _sequences(count=60, low=2, high=70):
    return [
        RNG.integers(1, 500, size=RNG.integers(low, high)).astype("int32") for _ in range(count)
    ]


def test_bucket_widths():
    assert batch_widths(50) == [8, 16, 32, 50]
    assert batch_widths(8) == [8]
    assert batch_widths(5) == [5]
    assert batch_widths(200) == [8, 16, 32, 64, 128, 200]
    assert batch_widths(50, [3, 4, 6, 8, 12, 50, 64]) == [3, 4, 6, 8, 12, 50]


@pytest.mark.parametrize("bucket_widths", [None, [3, 4, 6, 8, 12, 16, 24, 32]])
def test_bucketed_batches_hold_the_same_examples_cut_to_their_bucket_width(bucket_widths):
    sequences = _sequences()
    max_len = 50
    inputs, targets = training_examples(sequences, max_len)
    expected = {
        tuple(row[row > 0]): tuple(t[t > 0]) for row, t in zip(inputs, targets, strict=True)
    }
    seen = {}
    widths = batch_widths(max_len, bucket_widths)
    for batch_inputs, batch_targets in training_dataset(
        sequences,
        max_len,
        batch_size=8,
        seed=0,
        bucket_by_length=True,
        bucket_widths=bucket_widths,
    ):
        batch_inputs, batch_targets = batch_inputs.numpy(), batch_targets.numpy()
        width = batch_inputs.shape[1]
        assert width in widths and batch_targets.shape == batch_inputs.shape
        lengths = (batch_inputs > 0).sum(axis=1)
        assert lengths.max() <= width
        smaller = [w for w in widths if w < width]
        assert not smaller or lengths.max() > smaller[-1]  # the smallest width that fits
        assert batch_inputs.shape[0] == 8  # short batches are filled with padding rows
        for row, target in zip(batch_inputs, batch_targets, strict=True):
            if row.any():
                key = tuple(row[row > 0])
                assert key not in seen
                seen[key] = tuple(target[target > 0])
            else:
                assert not target.any()
    assert seen == expected


@pytest.mark.parametrize("bucket_by_length", [False, True])
def test_windowed_training_dataset_trains_every_target_once(bucket_by_length):
    sequences = _sequences(count=40, high=70)
    dataset = training_dataset(
        sequences, 16, batch_size=8, window_stride=8, bucket_by_length=bucket_by_length
    )
    trained = sum(int((targets.numpy() > 0).sum()) for _, targets in dataset)
    assert trained == sum(len(s) - 1 for s in sequences)
    latest_only = training_dataset(sequences, 16, batch_size=8)
    assert sum(int((t.numpy() > 0).sum()) for _, t in latest_only) < trained


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_bucketed_training_dataset_states_its_number_of_batches(drop_remainder):
    sequences = _sequences(count=60, high=70)
    dataset = training_dataset(
        sequences, 32, batch_size=8, bucket_by_length=True, drop_remainder=drop_remainder
    )
    assert int(dataset.cardinality()) == sum(1 for _ in dataset) > 0


def test_last_position_examples_cover_every_prefix_with_one_target():
    sequences = [np.array([5, 6, 7, 8], "int32"), np.array([9, 3], "int32")]
    batches = list(last_position_dataset(sequences, max_len=2, batch_size=16, shuffle=False))
    inputs = np.concatenate([b[0].numpy() for b in batches])
    targets = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(inputs, [[5, 0], [5, 6], [6, 7], [9, 0]])
    np.testing.assert_array_equal(targets, [[6, 0], [0, 7], [0, 8], [3, 0]])


def test_last_position_examples_have_one_target_at_the_last_item():
    sequences = _sequences(count=20, high=30)
    for inputs, targets in last_position_dataset(sequences, max_len=10, batch_size=32, seed=1):
        inputs, targets = inputs.numpy(), targets.numpy()
        assert ((targets > 0).sum(axis=1) == 1).all()
        last = (inputs > 0).sum(axis=1) - 1
        assert (targets[np.arange(len(targets)), last] > 0).all()


def test_last_position_dataset_rejects_empty_training_data():
    with pytest.raises(DataError, match="no training examples"):
        last_position_dataset([np.array([1], "int32")], max_len=5, batch_size=2)


def _epoch_orders(dataset, epochs):
    """The first batch's inputs of each of ``epochs`` epochs (one iterator each)."""
    return [next(iter(dataset))[0].numpy() for _ in range(epochs)]


@pytest.mark.parametrize("bucket_by_length", [False, True])
def test_skipped_epochs_leave_the_orders_an_uninterrupted_run_would_see(bucket_by_length):
    sequences = _sequences()

    def make():
        return training_dataset(sequences, 50, 16, seed=3, bucket_by_length=bucket_by_length)

    straight = _epoch_orders(make(), 4)
    resumed = _epoch_orders(skip_epochs(make(), 2), 2)
    for expected, got in zip(straight[2:], resumed, strict=True):
        np.testing.assert_array_equal(got, expected)
    # Not the trivial case: every epoch has its own order.
    assert not np.array_equal(straight[0], straight[2])


def test_skipped_epochs_leave_the_last_position_orders_of_an_uninterrupted_run():
    sequences = _sequences()
    straight = _epoch_orders(last_position_dataset(sequences, 50, 16, seed=3), 3)
    resumed = _epoch_orders(skip_epochs(last_position_dataset(sequences, 50, 16, seed=3), 2), 1)
    np.testing.assert_array_equal(resumed[0], straight[2])
