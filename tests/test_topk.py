"""Chunked top-k over the item table equals the brute-force top-k, ties included."""

import numpy as np
import pytest

from hybrid_tfrs.backend import ops
from hybrid_tfrs.topk import chunked_top_k

NUM_ITEMS = 23


def integer_problem(seed, batch=6, dim=3):
    """Small-integer queries and table: exact scores with many ties."""
    rng = np.random.default_rng(seed)
    table = rng.integers(-2, 3, size=(NUM_ITEMS + 1, dim)).astype("float32")
    query = rng.integers(-2, 3, size=(batch, dim)).astype("float32")
    return query, table


def brute_force(query, table, k, excluded=None):
    """ops.top_k over every item's score; excluded pairs and padding score -inf."""
    scores = query @ table.T
    scores[:, 0] = -np.inf
    if excluded is not None:
        scores[excluded] = -np.inf
    top_scores, top = ops.top_k(scores, k)
    return np.asarray(top), np.asarray(top_scores)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 7, NUM_ITEMS, NUM_ITEMS + 4])
@pytest.mark.parametrize("k", [1, 4, NUM_ITEMS])
def test_chunked_top_k_equals_brute_force_with_ties(chunk_size, k):
    query, table = integer_problem(seed=chunk_size * 31 + k)
    expected_ids, expected_scores = brute_force(query, table, k)
    scores = query @ table.T
    assert any(len(set(row[1:])) < NUM_ITEMS for row in scores)  # ties present
    ids, top_scores = chunked_top_k(query, table, k, chunk_size=chunk_size)
    np.testing.assert_array_equal(np.asarray(ids), expected_ids)
    np.testing.assert_array_equal(np.asarray(top_scores), expected_scores)


@pytest.mark.parametrize("chunk_size", [2, 6, 64])
def test_chunked_top_k_leaves_out_excluded_items(chunk_size):
    query, table = integer_problem(seed=7, batch=3)
    rows = np.array([0, 0, 0, 1, 2, 2], dtype="int32")
    items = np.array([1, 5, 5, 23, 9, 10], dtype="int32")  # a duplicate, the last item
    k = NUM_ITEMS  # more slots than unseen items: the tail is -inf
    expected_ids, expected_scores = brute_force(query, table, k, (rows, items))
    ids, scores = chunked_top_k(query, table, k, chunk_size=chunk_size, excluded=(rows, items))
    ids, scores = np.asarray(ids), np.asarray(scores)
    np.testing.assert_array_equal(scores, expected_scores)
    finite = np.isfinite(scores)
    np.testing.assert_array_equal(ids[finite], expected_ids[finite])
    assert finite.sum(axis=1).tolist() == [21, 22, 21]
    for row, item in zip(rows, items, strict=True):
        assert item not in ids[row][finite[row]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, r"k must be in 1\.\.23"),
        ({"k": NUM_ITEMS + 1}, r"k must be in 1\.\.23"),
        ({"k": 3, "chunk_size": 0}, "chunk_size must be a positive int"),
    ],
)
def test_chunked_top_k_argument_errors(kwargs, message):
    query, table = integer_problem(seed=1)
    with pytest.raises(ValueError, match=message):
        chunked_top_k(query, table, **kwargs)


@pytest.mark.parametrize("exclude_history", [False, True])
def test_model_recommend_does_not_depend_on_chunk_size(exclude_history):
    from hybrid_tfrs.encoders import build_encoder
    from hybrid_tfrs.retrieval import SequentialRetrievalModel

    model = SequentialRetrievalModel(build_encoder("linrec", num_items=30, max_len=8))
    ids = np.random.default_rng(0).integers(1, 31, size=(4, 8)).astype("int32")
    ids[1, 3:] = 0
    scores = np.asarray(model.score_items(ids, exclude_history=exclude_history))[:, 1:]
    for chunk_size in (4, 7, 30):
        top, top_scores = model.recommend(
            ids, k=30, exclude_history=exclude_history, chunk_size=chunk_size
        )
        top, top_scores = np.asarray(top), np.asarray(top_scores)
        finite = np.isfinite(top_scores)
        np.testing.assert_allclose(top_scores, -np.sort(-scores, axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(top[finite], (np.argsort(-scores, axis=1) + 1)[finite])
