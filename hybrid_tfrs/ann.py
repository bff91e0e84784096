"""Approximate top-k over an exported item table with faiss (optional: ``pip install faiss-cpu``).

For catalogues where scoring every item (hybrid_tfrs.topk) is too slow, an
external index answers maximum-inner-product queries approximately::

    items = export_items("exports/hybrid/1")        # the item_embeddings signature
    index = ItemIndex.build(items.item_ids, items.embeddings, kind="ivf")
    query = query_embeddings("exports/hybrid/1", [["i12", "i55"]])  # query_embedding
    raw_ids, scores = index.search(query, k=100)
    recall = recall_at_k(raw_ids, exact_raw_ids)    # against brute force

Kinds (both exact inner product, the model's score, on what they visit):

- ``"ivf"``: IVF-Flat, ``nlist`` k-means cells, ``nprobe`` cells searched per
  query; build is fast (k-means on a sample), recall grows with ``nprobe``.
- ``"hnsw"``: HNSW graph with ``m`` links per node and ``ef_search``
  candidates per query; slower to build, high recall at low latency.

The index knows nothing of histories: to leave a user's items out, ask for k
plus the history length and drop them. A model with a learned seen-item bias
(``ExportItems.seen_item_bias``, non-zero) adds it to the score of each item
of the model's input: search k plus the history length, add the bias to the
history's items among them (and, if it is positive, score the history's items
too), then keep the top k.
"""

import os
from typing import NamedTuple

import numpy as np

INDEX_KINDS = ("ivf", "hnsw")
FAISS_MISSING = (
    "the approximate index needs faiss: pip install faiss-cpu "
    '(or the package\'s "ann" extra); exact top-k needs nothing more (hybrid_tfrs.topk)'
)


def _faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(FAISS_MISSING) from error
    return faiss


class ExportItems(NamedTuple):
    item_ids: np.ndarray  # str [N], raw ids
    embeddings: np.ndarray  # float32 [N, d]
    seen_item_bias: float = 0.0  # the learned offset of already-seen items


def load_export(saved_model):
    """A loaded SavedModel: ``saved_model`` itself, or loaded from a version folder."""
    if not isinstance(saved_model, (str, bytes, os.PathLike)):
        return saved_model
    import tensorflow as tf

    return tf.saved_model.load(saved_model)


def export_items(saved_model):
    """The item table of an export (folder or loaded), from its ``item_embeddings`` signature."""
    result = load_export(saved_model).signatures["item_embeddings"]()
    raw_ids = np.array([raw.decode("utf-8") for raw in result["item_ids"].numpy()])
    bias = float(result["seen_item_bias"].numpy()) if "seen_item_bias" in result else 0.0
    return ExportItems(raw_ids, result["embeddings"].numpy(), bias)


def query_embeddings(saved_model, histories):
    """float32 [B, d] query vectors of raw-id histories (the ``query_embedding`` signature)."""
    import tensorflow as tf

    width = max(len(history) for history in histories)
    padded = tf.constant([list(history) + [""] * (width - len(history)) for history in histories])
    signature = load_export(saved_model).signatures["query_embedding"]
    return signature(history=padded)["embedding"].numpy()


class ItemIndex:
    """A faiss inner-product index over an item table, returning raw ids.

    Build with :meth:`build`; ``search`` gives (raw ids str [B, k], scores
    float32 [B, k]), best first; slots the index could not fill hold "" and -inf.
    """

    def __init__(self, index, item_ids):
        self.index = index
        self.item_ids = np.asarray(item_ids)

    @classmethod
    def build(
        cls,
        item_ids,
        embeddings,
        kind="ivf",
        nlist=None,
        nprobe=32,
        m=32,
        ef_construction=80,
        ef_search=128,
        train_size=65536,
        seed=0,
    ):
        """Indexes ``embeddings`` float [N, d], row i being item ``item_ids[i]``.

        Args:
            kind: "ivf" or "hnsw".
            nlist: IVF cells (default about 4 sqrt(N), at most N / 39).
            nprobe: IVF cells searched per query.
            m, ef_construction, ef_search: HNSW links per node, build and
                search beam widths.
            train_size: vectors IVF's k-means trains on (a seeded sample).
        """
        faiss = _faiss()
        if kind not in INDEX_KINDS:
            raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(item_ids) or vectors.shape[0] == 0:
            raise ValueError(
                f"embeddings must be [N, d] with N = len(item_ids) = {len(item_ids)} > 0, "
                f"got {vectors.shape}"
            )
        num_items, dim = vectors.shape
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        else:
            if nlist is None:
                nlist = max(1, min(int(4 * np.sqrt(num_items)), num_items // 39))
            if not 1 <= nlist <= num_items:
                raise ValueError(f"nlist must be in 1..{num_items}, got {nlist}")
            index = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT
            )
            rng = np.random.default_rng(seed)
            sample = rng.choice(num_items, size=min(train_size, num_items), replace=False)
            index.train(vectors[np.sort(sample)])
            index.nprobe = min(nprobe, nlist)
        index.add(vectors)
        return cls(index, item_ids)

    def search(self, queries, k):
        """Raw ids str [B, k] and scores float32 [B, k] of the approximate top-k."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.index.d:
            raise ValueError(f"queries must be [B, {self.index.d}], got {queries.shape}")
        if not 1 <= k <= len(self.item_ids):
            raise ValueError(f"k must be in 1..{len(self.item_ids)}, got {k}")
        scores, rows = self.index.search(queries, k)
        raw_ids = np.where(rows >= 0, self.item_ids[np.maximum(rows, 0)], "")
        return raw_ids, np.where(rows >= 0, scores, -np.inf).astype(np.float32)

    def save(self, path):
        """Writes the faiss index to ``path`` and the raw ids, one a line, to ``path.ids``."""
        _faiss().write_index(self.index, path)
        with open(f"{path}.ids", "w", encoding="utf-8") as f:
            f.writelines(f"{raw}\n" for raw in self.item_ids)

    @classmethod
    def load(cls, path):
        """The index :meth:`save` wrote."""
        with open(f"{path}.ids", encoding="utf-8") as f:
            item_ids = [line.rstrip("\n") for line in f]
        return cls(_faiss().read_index(path), item_ids)


def recall_at_k(approximate, exact):
    """Mean fraction of each row's exact top-k that the approximate top-k found.

    Args:
        approximate, exact: [B, k] ids (any comparable type), same shape.
    """
    approximate, exact = np.asarray(approximate), np.asarray(exact)
    if approximate.shape != exact.shape or approximate.ndim != 2:
        raise ValueError(
            f"approximate and exact must be [B, k] of one shape, got "
            f"{approximate.shape} and {exact.shape}"
        )
    found = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approximate, exact)]
    return float(np.mean(found) / exact.shape[1])
