"""Synthetic data, the dataset registry, file lookup, checksums, and the real files."""

import dataclasses
import hashlib
import logging
import os
import pathlib

import numpy as np
import pytest

from hybrid_tfrs.data import datasets
from hybrid_tfrs.data.datasets import DATASETS, load_dataset, load_raw
from hybrid_tfrs.data.readers import DataError, DatasetNotFoundError
from hybrid_tfrs.data.synthetic import SYNTHETIC_DEFAULTS, generate_synthetic

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = pathlib.Path(
    os.environ.get("HYBRID_TFRS_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
)
needs_real_data = pytest.mark.skipif(
    not DATA_DIR.is_dir(),
    reason=(
        f"real data folder {DATA_DIR} absent (set HYBRID_TFRS_DATA_DIR to the folder "
        "holding Beauty.txt and ml-1m/ml-1m.txt)"
    ),
)

S3REC_TEXT = "1 1 2 3\n2 2 3 4 5\n"


# Synthetic


def _numbers(raw):
    """Synthetic raw data -> per-user int arrays of item numbers."""
    return [np.array([int(item[1:]) for item in items]) for _, items in raw]


@pytest.fixture(scope="module")
def synthetic():
    return generate_synthetic(num_users=300, seed=0)


def test_synthetic_is_deterministic(synthetic):
    assert generate_synthetic(num_users=300, seed=0) == synthetic
    assert generate_synthetic(num_users=300, seed=1) != synthetic
    assert synthetic[0][0] == "u1" and synthetic[0][1][0].startswith("i")


def test_synthetic_default_size():
    assert SYNTHETIC_DEFAULTS["num_users"] == 2000 and SYNTHETIC_DEFAULTS["num_items"] == 400
    raw = generate_synthetic(**SYNTHETIC_DEFAULTS)
    lengths = np.array([len(items) for _, items in raw])
    assert len(raw) == 2000
    assert lengths.min() >= 20 and lengths.max() <= 120
    assert 50 <= lengths.mean() <= 70


def test_synthetic_has_sequential_structure(synthetic):
    sequences = _numbers(synthetic)
    num_items = SYNTHETIC_DEFAULTS["num_items"]
    steps = sum(len(s) - 1 for s in sequences)
    # Re-consumption: items seen before by the same user, against a uniform draw.
    repeats = sum(np.isin(s[t], s[:t]) for s in sequences for t in range(1, len(s))) / steps
    uniform_repeats = np.mean([t / num_items for s in sequences for t in range(1, len(s))])
    assert repeats > 4 * uniform_repeats
    # Bursts: the next item is the successor id, against 1 / num_items.
    successors = sum(np.sum(s[1:] == s[:-1] + 1) for s in sequences) / steps
    assert successors > 20 / num_items
    # Periods: the best fixed lag repeats items more often than in the same
    # user's items shuffled (same frequencies, no timing).
    rng = np.random.default_rng(0)

    def lag_match(seqs):
        return np.mean([max(np.mean(s[p:] == s[:-p]) for p in range(2, 16)) for s in seqs])

    assert lag_match(sequences) > 1.3 * lag_match([rng.permutation(s) for s in sequences])
    # Skewed popularity: the top 10 % of items hold far more than 10 % of clicks.
    counts = np.sort(np.bincount(np.concatenate(sequences)))[::-1]
    assert counts[: num_items // 10].sum() > 0.3 * counts.sum()


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least 5 items a genre"):
        generate_synthetic(num_items=20, num_genres=8)
    with pytest.raises(ValueError, match="min_len <= max_len"):
        generate_synthetic(min_len=30, max_len=10)


# Registry and lookup


def test_registry_names():
    assert set(DATASETS) == {"beauty", "sports", "toys", "yelp", "ml-1m", "synthetic"}
    assert DATASETS["beauty"].origin == (
        "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/Beauty.txt"
    )
    assert [DATASETS[n].sha256 for n in ("sports", "toys", "yelp")] == [None] * 3


def test_unknown_name_lists_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'beuty'; known datasets: beauty, sports"):
        load_raw("beuty")


def test_synthetic_through_load_dataset():
    data, split = load_dataset("synthetic", num_users=40, max_len=30)
    assert len(data.user_ids) == 40 and split.skipped_users == 0
    with pytest.raises(DataError, match="takes no generator options"):
        load_raw("toys", data_dir=".", num_users=3)


def test_data_dir_flat_and_nested_layouts(tmp_path):
    (tmp_path / "Toys_and_Games.txt").write_text(S3REC_TEXT)
    (tmp_path / "yelp").mkdir()
    (tmp_path / "yelp" / "Yelp.txt").write_text(S3REC_TEXT)
    expected = [("1", ["1", "2", "3"]), ("2", ["2", "3", "4", "5"])]
    assert load_raw("toys", data_dir=tmp_path) == expected
    assert load_raw("yelp", data_dir=str(tmp_path)) == expected


def test_data_dir_checks_pinned_sha256(tmp_path, monkeypatch):
    path = tmp_path / "beauty" / "Beauty.txt"
    path.parent.mkdir()
    path.write_text(S3REC_TEXT)
    with pytest.raises(DataError) as info:
        load_raw("beauty", data_dir=tmp_path)
    actual = hashlib.sha256(S3REC_TEXT.encode()).hexdigest()
    message = str(info.value)
    assert str(path) in message and DATASETS["beauty"].sha256 in message and actual in message
    pinned = dataclasses.replace(DATASETS["beauty"], sha256=actual)
    monkeypatch.setitem(DATASETS, "beauty", pinned)
    assert len(load_raw("beauty", data_dir=tmp_path)) == 2


def test_data_dir_missing_file_names_paths_tried(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_raw("ml-1m", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "ml-1m.txt") in message
    assert str(tmp_path / "ml-1m" / "ml-1m.txt") in message


def test_offline_download_explains_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets.keras.utils, "get_file", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_raw("ml-1m")
    message = str(info.value)
    assert f"Download ml-1m.txt from {DATASETS['ml-1m'].origin}" in message
    assert DATASETS["ml-1m"].origin.startswith("https://raw.githubusercontent.com/kang205/SASRec/")
    assert os.path.join("datasets", "hybrid_tfrs", "ml-1m.txt") in message
    assert "<folder>/ml-1m/ml-1m.txt" in message and "--data_dir=<folder>" in message
    assert "name resolution" in message


def test_download_passes_checksum_and_warns_when_unpinned(tmp_path, monkeypatch, caplog):
    path = tmp_path / "Sports_and_Outdoors.txt"
    path.write_text(S3REC_TEXT)
    calls = []

    def fake_get_file(fname, origin, file_hash=None, cache_subdir=None):
        calls.append((fname, origin, file_hash, cache_subdir))
        return str(path)

    monkeypatch.setattr(datasets.keras.utils, "get_file", fake_get_file)
    with caplog.at_level(logging.WARNING, logger=datasets.__name__):
        assert len(load_raw("sports")) == 2
    assert calls == [
        ("Sports_and_Outdoors.txt", DATASETS["sports"].origin, None, "datasets/hybrid_tfrs")
    ]
    assert hashlib.sha256(S3REC_TEXT.encode()).hexdigest() in caplog.text
    assert "unpinned" in caplog.text


# Real files


@needs_real_data
def test_real_beauty():
    data, split = load_dataset("beauty", data_dir=DATA_DIR)
    assert (len(data.user_ids), data.num_items, data.num_interactions) == (22363, 12101, 198502)
    assert split.stats()["users"] == 22363 and split.skipped_users == 0
    # The file's ids are already 1..N in first-appearance order.
    assert data.vocabulary.ids == tuple(str(i) for i in range(1, 12102))


@needs_real_data
def test_real_ml_1m():
    data, split = load_dataset("ml-1m", data_dir=DATA_DIR)
    assert (len(data.user_ids), data.num_items, data.num_interactions) == (6040, 3416, 999611)
    stats = split.stats()
    assert (stats["users"], stats["interactions"]) == (6040, 999611)
