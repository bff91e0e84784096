"""Approximate index over an export's item table (faiss-cpu, optional).

Tests that build an index are skipped where faiss is not installed
(``pytest.importorskip("faiss")``); the error without it is tested everywhere.
"""

import sys

import keras
import numpy as np
import pytest

from hybrid_tfrs import SequentialRetrievalModel, build_encoder
from hybrid_tfrs.ann import ItemIndex, export_items, query_embeddings, recall_at_k
from hybrid_tfrs.data import Vocabulary
from hybrid_tfrs.export import export_saved_model

NUM_ITEMS, MAX_LEN = 300, 6
VOCABULARY = Vocabulary([f"i{i}" for i in range(1, NUM_ITEMS + 1)])
HISTORIES = [[f"i{(7 * u + j) % NUM_ITEMS + 1}" for j in range(u % 5 + 1)] for u in range(40)]


def test_recall_at_k_counts_shared_ids_per_row():
    assert recall_at_k([["a", "b"], ["c", "d"]], [["b", "a"], ["c", "e"]]) == 0.75
    with pytest.raises(ValueError, match="approximate and exact must be"):
        recall_at_k([["a"]], [["a", "b"]])


def test_missing_faiss_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        ItemIndex.build(["a"], np.ones((1, 2)))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    pytest.importorskip("faiss")
    keras.utils.set_random_seed(0)
    model = SequentialRetrievalModel(
        build_encoder("linrec", num_items=NUM_ITEMS, max_len=MAX_LEN, hidden_dim=16)
    )
    return export_saved_model(
        model, VOCABULARY, str(tmp_path_factory.mktemp("export")), "linrec", version=1
    )


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_index_of_an_export_matches_its_exact_recommendations(export_dir, kind, tmp_path):
    pytest.importorskip("faiss")
    import tensorflow as tf

    items = export_items(export_dir)
    assert items.item_ids.tolist() == list(VOCABULARY.ids) and items.embeddings.shape == (300, 16)
    # every IVF cell probed: exact; HNSW with a wide beam on 300 items: near exact
    index = ItemIndex.build(items.item_ids, items.embeddings, kind=kind, nlist=8, nprobe=8)
    exact = tf.saved_model.load(export_dir).signatures["recommend"](
        history=tf.constant([h + [""] * (5 - len(h)) for h in HISTORIES]),
        k=tf.constant(20),
        exclude_history=tf.constant(False),
    )
    exact_ids = exact["item_ids"].numpy().astype(str)
    raw_ids, scores = index.search(query_embeddings(export_dir, HISTORIES), k=20)
    assert recall_at_k(raw_ids, exact_ids) >= (1.0 if kind == "ivf" else 0.95)
    if kind == "ivf":
        np.testing.assert_allclose(scores, exact["scores"].numpy(), rtol=1e-5, atol=1e-6)
    index.save(str(tmp_path / "items.faiss"))
    loaded = ItemIndex.load(str(tmp_path / "items.faiss"))
    np.testing.assert_array_equal(
        loaded.search(query_embeddings(export_dir, HISTORIES), 20)[0], raw_ids
    )


def test_index_argument_errors():
    pytest.importorskip("faiss")
    with pytest.raises(ValueError, match="kind must be one of"):
        ItemIndex.build(["a"], np.ones((1, 2)), kind="lsh")
    with pytest.raises(
        ValueError, match=r"embeddings must be \[N, d\] with N = len\(item_ids\) = 2"
    ):
        ItemIndex.build(["a", "b"], np.ones((3, 2)))
    index = ItemIndex.build(["a", "b", "c"], np.eye(3), kind="ivf", nlist=1)
    with pytest.raises(ValueError, match=r"queries must be \[B, 3\]"):
        index.search(np.ones((1, 2)), 1)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.3"):
        index.search(np.ones((1, 3)), 4)
    ids, scores = index.search(np.array([[0.0, 2.0, 1.0]]), 3)
    assert ids.tolist() == [["b", "c", "a"]] and scores.tolist() == [[2.0, 1.0, 0.0]]
