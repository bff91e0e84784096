"""Vocabulary, leave-one-out split and the training pipeline."""

import pathlib

import numpy as np
import pytest

from hybrid_tfrs.data.pipeline import pad_latest, training_dataset, training_examples
from hybrid_tfrs.data.readers import DataError
from hybrid_tfrs.data.split import encode_dataset, leave_one_out
from hybrid_tfrs.data.vocabulary import Vocabulary

FIXTURES = pathlib.Path(__file__).parent / "fixtures"

RAW = [
    ("u1", ["b", "a", "c", "a", "d"]),
    ("u2", ["x", "b"]),  # too short for min_length=3
    ("u3", ["c", "e", "b"]),
    ("u4", ["d", "d", "a", "f"]),
]


# Vocabulary


def test_vocabulary_first_appearance_order_and_lookups():
    vocab = Vocabulary.from_sequences(items for _, items in RAW)
    assert vocab.ids == ("b", "a", "c", "d", "x", "e", "f")
    assert len(vocab) == 7
    assert vocab.index("b") == 1 and vocab.raw(7) == "f"
    np.testing.assert_array_equal(vocab.encode(["a", "f", "b"]), [2, 7, 1])
    assert vocab.encode(["a"]).dtype == np.int32
    assert vocab.decode(np.array([[2, 7]])) == ["a", "f"]
    with pytest.raises(KeyError, match="'zz'"):
        vocab.index("zz")
    with pytest.raises(IndexError, match="outside 1..7"):
        vocab.raw(0)


def test_vocabulary_rejects_user_item_pairs():
    with pytest.raises(DataError, match="must be a str"):
        Vocabulary.from_sequences(RAW)


def test_vocabulary_save_load_round_trip(tmp_path):
    vocab = Vocabulary.from_sequences([["é", "i 2", "42"], ["42", "x"]])
    path = tmp_path / "vocab.txt"
    vocab.save(path)
    assert path.read_text(encoding="utf-8") == "é\ni 2\n42\nx\n"
    assert Vocabulary.load(path) == vocab


@pytest.mark.parametrize(
    "fname, words",
    [
        ("vocab_duplicate.txt", ":3: duplicate item id 'b' (first on line 2)"),
        ("vocab_empty_id.txt", ":2: empty"),
    ],
)
def test_vocabulary_load_errors(fname, words):
    with pytest.raises(DataError) as info:
        Vocabulary.load(FIXTURES / fname)
    assert f"{fname}{words}" in str(info.value)


# Split


def test_encode_dataset():
    data = encode_dataset(RAW, "toy")
    assert data.user_ids == ["u1", "u2", "u3", "u4"]
    np.testing.assert_array_equal(data.sequences[0], [1, 2, 3, 2, 4])
    assert data.sequences[0].dtype == np.int32
    assert (data.num_items, data.num_interactions) == (7, 14)
    with pytest.raises(DataError, match="user 'u1' appears twice"):
        encode_dataset(RAW + [("u1", ["a"])], "toy")


def test_leave_one_out_exact_arrays():
    split = leave_one_out(encode_dataset(RAW, "toy"), min_length=3)
    # b=1 a=2 c=3 d=4 x=5 e=6 f=7; u1 = 1 2 3 2 4, u3 = 3 6 1, u4 = 4 4 2 7
    assert split.user_ids == ["u1", "u3", "u4"]
    assert split.skipped_users == 1
    assert split.num_items == 7
    for got, want in zip(split.train, [[1, 2, 3], [3], [4, 4]]):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(split.valid_histories, [[1, 2, 3], [3], [4, 4]]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(split.valid_targets, [2, 6, 2])
    for got, want in zip(split.test_histories, [[1, 2, 3, 2], [3, 6], [4, 4, 2]]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(split.test_targets, [4, 1, 7])
    for got, want in zip(split.user_items, [[1, 2, 3, 4], [1, 3, 6], [2, 4, 7]]):
        np.testing.assert_array_equal(got, want)
    # Train part only: item 6 (valid target) and 7 (test target) count 0, as does x=5.
    np.testing.assert_array_equal(split.item_popularity, [0, 1, 1, 2, 2, 0, 0, 0])
    assert split.item_popularity.dtype == np.int64
    assert split.stats() == {
        "dataset": "toy",
        "users": 3,
        "items": 7,
        "interactions": 12,
        "min_length": 3,
        "mean_length": 4.0,
        "max_length": 5,
        "skipped_users": 1,
    }


def test_leave_one_out_all_users_too_short():
    with pytest.raises(DataError, match="no user has at least 10 items"):
        leave_one_out(encode_dataset(RAW, "toy"), min_length=10)
    with pytest.raises(ValueError, match="at least 3"):
        leave_one_out(encode_dataset(RAW, "toy"), min_length=2)


# Pipeline


def test_pad_latest_keeps_latest_left_aligned():
    sequences = [np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([], dtype=np.int32), [8, 9, 10]]
    np.testing.assert_array_equal(
        pad_latest(sequences, 3),
        [[3, 4, 5], [7, 0, 0], [0, 0, 0], [8, 9, 10]],
    )
    assert pad_latest(sequences, 3).dtype == np.int32
    assert pad_latest([], 4).shape == (0, 4)


def test_training_examples_exact():
    sequences = [np.array([1, 2, 3, 4, 5, 6]), np.array([7, 8]), np.array([9])]
    inputs, targets = training_examples(sequences, 3)
    np.testing.assert_array_equal(inputs, [[3, 4, 5], [7, 0, 0]])
    np.testing.assert_array_equal(targets, [[4, 5, 6], [8, 0, 0]])


def test_training_examples_invariants_on_random_sequences():
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 50, size=n) for n in rng.integers(1, 40, size=300)]
    max_len = 10
    inputs, targets = training_examples(sequences, max_len)
    usable = [s for s in sequences if len(s) >= 2]
    assert inputs.shape == targets.shape == (len(usable), max_len)
    for row_in, row_tg, seq in zip(inputs, targets, usable):
        n = min(len(seq) - 1, max_len)
        # Padding only on the right, and inputs / targets padded alike.
        assert (row_in[:n] > 0).all() and (row_in[n:] == 0).all()
        assert (row_tg[:n] > 0).all() and (row_tg[n:] == 0).all()
        # The latest items are kept: the last target is the last item.
        np.testing.assert_array_equal(row_tg[:n], seq[-n:])
        np.testing.assert_array_equal(row_in[:n], seq[-n - 1 : -1])
        # targets[t] is the item that follows inputs[t] in the original sequence,
        # so no target is at or before its position in the inputs.
        start = len(seq) - 1 - n
        for t in range(n):
            assert row_in[t] == seq[start + t] and row_tg[t] == seq[start + t + 1]


def test_training_examples_windows_exact():
    # 7 (input, target) pairs, max_len 3, stride 2: windows end at pairs 7, 5, 3;
    # each keeps its last 2 targets (more context than in the window after it), and
    # the last one reaches the start and keeps all targets not trained elsewhere.
    sequence = np.arange(1, 9)
    inputs, targets = training_examples([sequence, np.array([9, 10])], 3, window_stride=2)
    np.testing.assert_array_equal(inputs, [[5, 6, 7], [3, 4, 5], [1, 2, 3], [9, 0, 0]])
    np.testing.assert_array_equal(targets, [[0, 7, 8], [0, 5, 6], [2, 3, 4], [10, 0, 0]])
    # Stride = max_len: windows side by side, every target kept.
    inputs, targets = training_examples([sequence], 3, window_stride=3)
    np.testing.assert_array_equal(inputs, [[5, 6, 7], [2, 3, 4], [1, 0, 0]])
    np.testing.assert_array_equal(targets, [[6, 7, 8], [3, 4, 5], [2, 0, 0]])


@pytest.mark.parametrize("max_len, stride", [(10, 1), (10, 4), (10, 10), (7, 3)])
def test_training_examples_windows_train_every_target_once(max_len, stride):
    rng = np.random.default_rng(1)
    # Item ids unique across users, so each item names its (user, index).
    sequences = [1000 * (u + 1) + np.arange(n) for u, n in enumerate(rng.integers(2, 60, size=80))]
    inputs, targets = training_examples(sequences, max_len, window_stride=stride)
    trained = {}  # (user, index of the target) -> items of context it is trained with
    for row_in, row_tg in zip(inputs, targets):
        width = int((row_in > 0).sum())
        user, start = divmod(int(row_in[0]), 1000)
        seq = sequences[user - 1]
        np.testing.assert_array_equal(row_in[:width], seq[start : start + width])
        assert not row_tg[width:].any()
        for j in np.flatnonzero(row_tg):
            assert row_tg[j] == seq[start + j + 1]
            assert (user, start + j + 1) not in trained
            trained[(user, start + j + 1)] = j + 1
    expected = {(u + 1, i) for u, seq in enumerate(sequences) for i in range(1, len(seq))}
    assert set(trained) == expected
    for (_, index), context in trained.items():
        assert context >= min(index, max_len - stride + 1)


def test_training_examples_rejects_a_bad_stride():
    with pytest.raises(ValueError, match="window_stride must be in 0..max_len=4, got 5"):
        training_examples([np.arange(1, 10)], 4, window_stride=5)


def test_training_dataset_batches_and_seeded_reshuffle():
    sequences = [np.arange(1, n + 3) for n in range(10)]  # 10 examples

    def epoch(ds):
        return [row.tobytes() for inputs, _ in ds.as_numpy_iterator() for row in inputs]

    dataset = training_dataset(sequences, max_len=4, batch_size=4, seed=3)
    first, second = epoch(dataset), epoch(dataset)
    assert sorted(first) == sorted(second) and first != second  # reshuffled each epoch
    again = training_dataset(sequences, max_len=4, batch_size=4, seed=3)
    assert epoch(again) == first  # the seed fixes the order

    batches = list(dataset.as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(4, 4), (4, 4), (2, 4)]
    assert all(b[0].dtype == np.int32 and b[1].dtype == np.int32 for b in batches)
    plain = training_dataset(sequences, max_len=4, batch_size=4, shuffle=False, drop_remainder=True)
    inputs, targets = training_examples(sequences, 4)
    got = list(plain.as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), inputs[:8])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), targets[:8])


def test_training_dataset_errors():
    with pytest.raises(DataError, match="no training examples"):
        training_dataset([np.array([1]), np.array([2])], max_len=4, batch_size=2)
    with pytest.raises(DataError, match="fewer than batch_size=8"):
        training_dataset([np.array([1, 2])], max_len=4, batch_size=8, drop_remainder=True)
