"""Named datasets: where their files are, how to check and read them.

Files are looked up in a folder the user names (``data_dir``) or downloaded
into the Keras cache. ``beauty`` and ``ml-1m`` are pinned by sha256. The
``sports``, ``toys`` and ``yelp`` files are NOT pinned (no trusted checksum
is known here): their downloads are unverified, and a warning logs the sha256
of the file obtained so it can be recorded. ``synthetic`` is generated.
"""

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable

from hybrid_tfrs.data.readers import DataError, DatasetNotFoundError, read_s3rec, read_sasrec
from hybrid_tfrs.data.split import encode_dataset, leave_one_out
from hybrid_tfrs.data.synthetic import generate_synthetic

__all__ = ["DatasetSpec", "DATASETS", "load_raw", "load_dataset", "CACHE_SUBDIR"]

log = logging.getLogger(__name__)

CACHE_SUBDIR = "datasets/hybrid_tfrs"
_S3REC_DATA = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: file name, download address, sha256 (None = unpinned), reader."""

    name: str
    fname: str | None
    origin: str | None
    sha256: str | None
    reader: Callable | None
    description: str


DATASETS = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "beauty",
            "Beauty.txt",
            _S3REC_DATA + "Beauty.txt",
            "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
            read_s3rec,
            "Amazon Beauty 5-core (S3-Rec)",
        ),
        DatasetSpec(
            "sports",
            "Sports_and_Outdoors.txt",
            _S3REC_DATA + "Sports_and_Outdoors.txt",
            None,
            read_s3rec,
            "Amazon Sports and Outdoors 5-core (S3-Rec), unpinned",
        ),
        DatasetSpec(
            "toys",
            "Toys_and_Games.txt",
            _S3REC_DATA + "Toys_and_Games.txt",
            None,
            read_s3rec,
            "Amazon Toys and Games 5-core (S3-Rec), unpinned",
        ),
        DatasetSpec(
            "yelp",
            "Yelp.txt",
            _S3REC_DATA + "Yelp.txt",
            None,
            read_s3rec,
            "Yelp (S3-Rec), unpinned",
        ),
        DatasetSpec(
            "ml-1m",
            "ml-1m.txt",
            "https://raw.githubusercontent.com/kang205/SASRec/master/data/ml-1m.txt",
            "b725f3acb3986fe3130bffd1e77a74d182a1f51799567a236dbd60270f95b0a2",
            read_sasrec,
            "MovieLens-1M (SASRec)",
        ),
        DatasetSpec("synthetic", None, None, None, None, "generated, see generate_synthetic"),
    ]
}


def _spec(name):
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}"
        ) from None


def file_sha256(path):
    """The hex sha256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find_local(spec, data_dir):
    """The verified path of ``spec``'s file in ``data_dir`` (flat or in a ``<name>/`` folder)."""
    candidates = [
        os.path.join(data_dir, spec.fname),
        os.path.join(data_dir, spec.name, spec.fname),
    ]
    for path in candidates:
        if os.path.isfile(path):
            actual = file_sha256(path)
            if spec.sha256 is not None and actual != spec.sha256:
                raise DataError(
                    f"{path}: sha256 mismatch for dataset {spec.name!r}: "
                    f"expected {spec.sha256}, got {actual}"
                )
            if spec.sha256 is None:
                log.info("%s: unpinned dataset %r, sha256 %s", path, spec.name, actual)
            return path
    raise DatasetNotFoundError(
        f"dataset {spec.name!r}: {spec.fname} not found in data_dir; tried " + ", ".join(candidates)
    )


def __getattr__(name):
    """``keras`` on first use: it imports TensorFlow, which reading files does not need."""
    if name == "keras":
        import keras

        return keras
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _download(spec):
    """Fetches ``spec``'s file into the Keras cache (checked when pinned); returns its path."""
    import keras

    try:
        path = keras.utils.get_file(
            spec.fname, spec.origin, file_hash=spec.sha256, cache_subdir=CACHE_SUBDIR
        )
    except Exception as err:  # noqa: BLE001  (any failure means: get the file by hand)
        cache = os.path.join(
            os.environ.get("KERAS_HOME", os.path.join("~", ".keras")), CACHE_SUBDIR
        )
        raise DatasetNotFoundError(
            f"Could not download dataset {spec.name!r} ({type(err).__name__}: {err}). "
            f"Download {spec.fname} from {spec.origin} and either put it in the Keras "
            f"cache as {os.path.join(cache, spec.fname)}, or put it in a folder of your "
            f"choice as <folder>/{spec.fname} (or <folder>/{spec.name}/{spec.fname}) and "
            f"pass --data_dir=<folder> (data_dir=<folder> in Python)."
        ) from err
    if spec.sha256 is None:
        log.warning(
            "dataset %r is unpinned (no known checksum); downloaded %s has sha256 %s",
            spec.name,
            path,
            file_sha256(path),
        )
    return path


def load_raw(name, data_dir=None, **synthetic_kwargs):
    """Reads a named dataset as ``[(user, [item, ...]), ...]``.

    Args:
        name: one of ``DATASETS``.
        data_dir: folder holding the file as ``<data_dir>/<file>`` or
            ``<data_dir>/<name>/<file>``; None downloads into the Keras cache.
        **synthetic_kwargs: arguments of :func:`generate_synthetic` (``synthetic`` only).
    """
    spec = _spec(name)
    if spec.name == "synthetic":
        return generate_synthetic(**synthetic_kwargs)
    if synthetic_kwargs:
        raise DataError(
            f"dataset {name!r} takes no generator options, got {sorted(synthetic_kwargs)}"
        )
    path = _download(spec) if data_dir is None else _find_local(spec, os.fspath(data_dir))
    return spec.reader(path)


def load_dataset(name, data_dir=None, min_length=3, **synthetic_kwargs):
    """Loads, encodes and splits a named dataset; returns ``(SequenceData, Split)``."""
    data = encode_dataset(load_raw(name, data_dir, **synthetic_kwargs), name)
    return data, leave_one_out(data, min_length=min_length)
