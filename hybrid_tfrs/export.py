"""SavedModel export for TensorFlow Serving (TensorFlow backend only).

``export_saved_model`` writes ``<export_dir>/<model_name>/<version>/``, the
layout TensorFlow Serving polls, with four signatures over raw item ids:

- ``serving_default`` (TFX convention): ``examples``, serialized ``tf.Example``
  [B] with a bytes-list feature ``history`` (raw ids, oldest first) ->
  ``item_ids`` string [B, top_k], ``scores`` float32 [B, top_k], best first;
- ``recommend``: ``history`` string [B, T] ("" = padding), ``k`` int32
  scalar and ``exclude_history`` bool scalar -> ``item_ids`` [B, k],
  ``scores`` [B, k];
- ``query_embedding``: ``history`` -> ``embedding`` float32 [B, d];
- ``item_embeddings``: no input -> ``item_ids`` string [N], ``embeddings``
  float32 [N, d] (for an external ANN index; the query is ``query_embedding``)
  and ``seen_item_bias`` float32 scalar (0 without one: see below).

Each history row is mapped to indices with the vocabulary (an asset of the
SavedModel); ids unknown to the vocabulary and "" are dropped, the latest
``max_len`` remaining items are kept, left-aligned and 0-padded on the right
(the model's layout). A row with no known item, or k outside 1..N, fails with
InvalidArgumentError. With history exclusion (``exclude_history`` of
``recommend``; the export's ``exclude_history`` for ``serving_default``) every
known item of the row, not only the latest ``max_len``, is left out of the
results; slots beyond the unseen items hold ``""`` with score -inf.
A model trained with a seen-item bias (``--seen_item_bias``) adds its learned
offset to the score of every item of the model's input (the latest ``max_len``
known items) in ``serving_default`` and ``recommend``; an external index
scores ``query . embedding`` only, so its caller adds ``seen_item_bias`` to
the history's items when it re-ranks (hybrid_tfrs.ann).
``assets.extra/tf_serving_warmup_requests`` holds a few ``PredictionLog``
records that TensorFlow Serving replays at load.
"""

import json
import os
import re
import shutil
import socket
import tempfile
import time

import keras
import tensorflow as tf

from hybrid_tfrs import topk

VOCABULARY_FILE = "vocabulary.txt"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
EXPORT_INFO_FILE = os.path.join("assets.extra", "export.json")  # the export's settings and source
HISTORY_FEATURE = "history"
SIGNATURES = ("serving_default", "recommend", "query_embedding", "item_embeddings")
_TEMP_PREFIX = ".tmp-export-"  # TF Serving only loads numeric version folders
STALE_TEMP_SECONDS = 24 * 3600  # a temp folder of another host counts as abandoned after this


class RecommenderModule(tf.Module):
    """The served computation: raw-id histories in, raw-id recommendations out.

    Args:
        model: a built ``SequentialRetrievalModel`` (Keras 3, TensorFlow backend).
        vocabulary_path: file with the raw id of index i on line i (1-based);
            it becomes the SavedModel's ``assets/vocabulary.txt``.
        top_k: number of items of ``serving_default`` (1..N).
        exclude_history: whether ``serving_default`` leaves the history's items
            out of its results (``recommend`` takes it per request).
        chunk_size: items scored at a time by ``serving_default`` and
            ``recommend`` (hybrid_tfrs.topk).
    """

    def __init__(
        self,
        model,
        vocabulary_path,
        top_k,
        exclude_history=False,
        chunk_size=topk.DEFAULT_CHUNK_SIZE,
    ):
        super().__init__(name="recommender")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.model = model
        self.max_len = model.max_len
        self.num_items = model.num_items
        self.top_k = top_k
        self.exclude_history = bool(exclude_history)
        self.chunk_size = chunk_size
        # Tracked here so the SavedModel holds every weight the functions read.
        self.model_variables = list(model.variables)
        self.vocabulary = tf.saved_model.Asset(vocabulary_path)
        # Line numbers are 0-based: index = line + 1, unknown -> -1 + 1 = 0 (padding).
        # vocab_size: a vocabulary file cut short (a half-copied asset) fails the load
        # instead of serving a catalogue with items missing.
        self.index_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.vocabulary,
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
                vocab_size=self.num_items,
            ),
            default_value=-1,
        )
        self.raw_id_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.vocabulary,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
                vocab_size=self.num_items,
            ),
            default_value="",
        )

    def known_indices(self, history):
        """string [B, T] raw ids -> ragged int64 [B, (known)] indices, oldest first.

        Unknown ids and "" are dropped; fails if a row keeps no item.
        """
        index = self.index_table.lookup(history) + 1
        known = tf.ragged.boolean_mask(index, index > 0)
        lengths = known.row_lengths()
        check = tf.debugging.Assert(
            tf.reduce_all(lengths > 0),
            [
                "every history needs at least one item id of the vocabulary "
                "(unknown ids and empty strings are dropped); rows without one:",
                tf.where(tf.equal(lengths, 0))[:, 0],
            ],
            summarize=20,
        )
        with tf.control_dependencies([check]):
            return tf.identity(known)

    def model_input(self, known):
        """ragged [B, (known)] indices -> int32 [B, max_len], latest items, 0-padded."""
        latest = known[:, -self.max_len :].to_tensor(0, shape=[None, self.max_len])
        return tf.cast(latest, tf.int32)

    def encode_histories(self, history):
        """string [B, T] raw ids -> int32 [B, max_len] indices in the model's layout."""
        return self.model_input(self.known_indices(history))

    def top_items(self, history, k, exclude_history):
        """string [B, T], int32 k, bool exclude_history -> item_ids string [B, k],
        scores float32 [B, k], known_items int32 [B] (the ids of each row found in the
        vocabulary, so a client can tell a history read whole from one read in part).

        The item table is scored ``chunk_size`` items at a time in a
        ``tf.while_loop`` (one chunk after the other) that merges a running
        top-k (hybrid_tfrs.topk): memory O(B x (k + chunk_size)).
        """
        check = tf.debugging.Assert(
            tf.logical_and(k >= 1, k <= self.num_items),
            [f"k must be in 1..{self.num_items} (the catalogue size), got", k],
        )
        with tf.control_dependencies([check]):
            k = tf.identity(k)
        known = self.known_indices(history)
        inputs = self.model_input(known)
        query = self.model.query_embedding(inputs)
        offset = None
        if self.model.seen_bias is not None:  # the items the model read get its offset
            pairs = tf.cast(tf.where(inputs > 0), tf.int32)
            offset = (pairs[:, 0], tf.gather_nd(inputs, pairs), self.model.seen_bias.bias)
        # Every known item of the row (not only the latest max_len) scores
        # -inf: (row, item) pairs, O(B * T), never a [B, T, N] one-hot.
        seen_rows = tf.cast(known.value_rowids(), tf.int32)
        seen_items = tf.cast(known.flat_values, tf.int32)
        seen_rows = tf.cond(exclude_history, lambda: seen_rows, lambda: seen_rows[:0])
        seen_items = tf.cond(exclude_history, lambda: seen_items, lambda: seen_items[:0])
        table = tf.convert_to_tensor(self.model.encoder.item_embeddings)
        end = self.num_items + 1

        def merge(lo, best_scores, best_ids):
            hi = tf.minimum(lo + self.chunk_size, end)
            best = topk.merge_chunk(
                query, table, lo, hi, (best_scores, best_ids), (seen_rows, seen_items), offset
            )
            return (hi, *best)

        _, top_scores, top = tf.while_loop(
            lambda lo, *_: lo < end,
            merge,
            (tf.constant(1), *topk.initial_top_k(tf.shape(query)[0], k, query.dtype)),
            parallel_iterations=1,  # one chunk's scores alive at a time
        )
        item_ids = self.raw_id_table.lookup(tf.cast(top - 1, tf.int64))  # line = index - 1
        item_ids = tf.where(tf.math.is_inf(top_scores), tf.constant(""), item_ids)
        return {
            "item_ids": item_ids,
            "scores": top_scores,  # float32: query_embedding and the table are
            "known_items": tf.cast(known.row_lengths(), tf.int32),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_default(self, examples):
        features = tf.io.parse_example(examples, {HISTORY_FEATURE: tf.io.VarLenFeature(tf.string)})
        history = tf.sparse.to_dense(features[HISTORY_FEATURE], default_value="")
        return self.top_items(
            history, tf.constant(self.top_k, tf.int32), tf.constant(self.exclude_history)
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([], tf.int32, name="k"),
            tf.TensorSpec([], tf.bool, name="exclude_history"),
        ]
    )
    def recommend(self, history, k, exclude_history):
        return self.top_items(history, k, exclude_history)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
    def query_embedding(self, history):
        query = self.model.query_embedding(self.encode_histories(history))
        return {"embedding": query}  # float32 whatever the dtype policy

    @tf.function(input_signature=[])
    def item_embeddings(self):
        indices = tf.range(self.num_items, dtype=tf.int64)
        table = tf.convert_to_tensor(self.model.encoder.item_embeddings)[1:]
        seen_bias = self.model.seen_bias
        bias = seen_bias.bias if seen_bias is not None else 0.0
        return {
            "item_ids": self.raw_id_table.lookup(indices),
            "embeddings": tf.cast(table, tf.float32),
            "seen_item_bias": tf.cast(bias, tf.float32),
        }

    def signatures(self):
        return {name: getattr(self, name).get_concrete_function() for name in SIGNATURES}


def serialize_history_example(history):
    """Raw item ids (oldest first) -> serialized tf.Example with the ``history`` feature."""
    values = [raw.encode("utf-8") if isinstance(raw, str) else bytes(raw) for raw in history]
    example = tf.train.Example(
        features=tf.train.Features(
            feature={HISTORY_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=values))}
        )
    )
    return example.SerializeToString()


def warmup_requests(model_name, raw_ids, top_k):
    """A few PredictionLog records (serving_default and recommend) over known ids."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    ids = list(raw_ids[:4])
    histories = [ids, ids[:1] + [""] * (len(ids) - 1)]
    requests = []
    for signature, inputs in (
        ("serving_default", {"examples": [serialize_history_example(h) for h in histories]}),
        ("recommend", {"history": histories, "k": min(10, top_k), "exclude_history": False}),
        ("recommend", {"history": histories[:1], "k": top_k, "exclude_history": True}),
    ):
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
        )
        dtypes = {"k": tf.int32, "exclude_history": tf.bool}
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(
                tf.make_tensor_proto(value, dtype=dtypes.get(alias, tf.string))
            )
        requests.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    return requests


def _export_info(model_name, top_k, exclude_history, chunk_size, source):
    """A version's ``export.json`` without its version number."""
    info = {
        "model_name": model_name,
        "top_k": top_k,
        "exclude_history": bool(exclude_history),
        "chunk_size": chunk_size,
    }
    return {**info, "source": source} if source is not None else info


def _versions(model_dir):
    """The version numbers under ``model_dir`` (none if it does not exist)."""
    if not os.path.isdir(model_dir):
        return []
    return [int(name) for name in os.listdir(model_dir) if name.isdigit()]


def newest_version(model_dir):
    """The newest version folder under ``model_dir``, or None."""
    versions = _versions(model_dir)
    return os.path.join(model_dir, str(max(versions))) if versions else None


def _next_version(model_dir):
    """A Unix timestamp, or the newest version + 1 if that is not larger."""
    return max([int(time.time())] + [v + 1 for v in _versions(model_dir)])


def _temp_prefix(version):
    return f"{_TEMP_PREFIX}{int(version)}-{socket.gethostname()}-{os.getpid()}-"


def _is_abandoned(model_dir, name, now):
    """Whether ``name`` is the temp folder of an export that can no longer finish.

    Ours if it names this host: abandoned once its process is gone. Another
    host's (a shared file system): abandoned after ``STALE_TEMP_SECONDS``.
    """
    ours = re.match(rf"{re.escape(_TEMP_PREFIX)}\d+-{re.escape(socket.gethostname())}-(\d+)-", name)
    if ours:
        try:
            os.kill(int(ours.group(1)), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False
    return now - os.path.getmtime(os.path.join(model_dir, name)) > STALE_TEMP_SECONDS


def remove_abandoned_exports(model_dir, log=print):
    """Deletes temp folders that killed exports left in ``model_dir``; returns their names."""
    now = time.time()
    removed = []
    for name in sorted(os.listdir(model_dir)):
        if name.startswith(_TEMP_PREFIX) and _is_abandoned(model_dir, name, now):
            shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
            removed.append(name)
    if removed:
        log(f"removed {len(removed)} folder(s) left by interrupted exports: {', '.join(removed)}")
    return removed


def export_saved_model(
    model,
    vocabulary,
    export_dir,
    model_name,
    version=None,
    top_k=100,
    exclude_history=False,
    chunk_size=topk.DEFAULT_CHUNK_SIZE,
    source=None,
    unless_exported=False,
):
    """Writes a SavedModel for TensorFlow Serving and returns its folder.

    The version is written to a hidden temporary folder inside
    ``<export_dir>/<model_name>/`` and renamed into place, so a half-written
    version is never visible to a server polling the folder.

    Args:
        model: a built ``SequentialRetrievalModel``.
        vocabulary: the ``Vocabulary`` of the model's item indices (N items).
        export_dir: base folder; the model goes to ``<export_dir>/<model_name>/``.
        model_name: the name clients ask for (e.g. the model kind).
        version: positive integer; default: the Unix time (as TFX's Pusher),
            bumped past the newest existing version if needed.
        top_k: items returned by ``serving_default``; clipped to N.
        exclude_history: whether ``serving_default`` leaves out the items of
            the history (``recommend`` has it as an input).
        chunk_size: items the served top-k scores at a time; memory per
            request O(B x (k + chunk_size)).
        source: JSON-able record of where the model comes from (``export_run``:
            the run folder and its epochs), kept in ``assets.extra/export.json``.
        unless_exported: when the newest version there has this very
            ``export.json`` (the same source and settings), return it instead
            of publishing a copy (a server would reload for nothing).

    Returns:
        ``<export_dir>/<model_name>/<version>``.

    Raises:
        ValueError: mismatched vocabulary, bad name, version or top_k.
        FileExistsError: that version already exists.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"export needs the TensorFlow Keras backend, not {keras.backend.backend()!r}"
        )
    if len(vocabulary) != model.num_items:
        raise ValueError(
            f"vocabulary has {len(vocabulary)} items but the model has num_items={model.num_items}"
        )
    if not model_name or model_name.startswith(".") or os.sep in model_name:
        raise ValueError(f"model_name must be a plain folder name, got {model_name!r}")
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    top_k = min(int(top_k), model.num_items)
    model_dir = os.path.join(export_dir, model_name)
    info = _export_info(model_name, top_k, exclude_history, chunk_size, source)
    if unless_exported and (newest := newest_version(model_dir)):
        if _read_export_info(newest) == info:
            return newest
    os.makedirs(model_dir, exist_ok=True)
    remove_abandoned_exports(model_dir)
    if version is None:
        version = _next_version(model_dir)
    if int(version) < 1 or str(version) != str(int(version)):
        raise ValueError(f"version must be a positive integer, got {version!r}")
    final_dir = os.path.join(model_dir, str(int(version)))
    if os.path.exists(final_dir):
        raise FileExistsError(f"{final_dir} already exists; pick another --version")

    temp_dir = tempfile.mkdtemp(prefix=_temp_prefix(version), dir=model_dir)
    try:
        with tempfile.TemporaryDirectory() as assets_source:
            vocabulary_path = os.path.join(assets_source, VOCABULARY_FILE)
            vocabulary.save(vocabulary_path)
            module = RecommenderModule(model, vocabulary_path, top_k, exclude_history, chunk_size)
            saved = os.path.join(temp_dir, "model")
            tf.saved_model.save(module, saved, signatures=module.signatures())
        _write_warmup(saved, warmup_requests(model_name, vocabulary.ids, top_k))
        with open(os.path.join(saved, EXPORT_INFO_FILE), "w") as f:
            json.dump({**info, "version": int(version)}, f)
        _check_it_serves(saved, model_name, version, final_dir)
        _sync_tree(saved)  # on disk before it has its name, so a power loss cannot publish less
        os.rename(saved, final_dir)  # atomic on one file system; fails if it appeared meanwhile
        _fsync(model_dir)  # the rename itself
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return final_dir


def _check_it_serves(saved_dir, model_name, version, final_dir):
    """Loads the written SavedModel and replays its warmup requests, as a server will;
    ValueError (nothing published) if it cannot."""
    from hybrid_tfrs.serving.servable import LoadError, Servable

    try:
        Servable(model_name, int(version), saved_dir).warm_up(max_rows=1 << 20)
    except LoadError as error:
        raise ValueError(
            f"{final_dir}: not published, the export does not load and answer its warmup "
            f"requests ({error.code}: {error.message})"
        ) from None


def _sync_tree(root):
    """fsync every file and folder under ``root``, ``root`` included."""
    for folder, _, names in os.walk(root):
        for name in names:
            _fsync(os.path.join(folder, name))
        _fsync(folder)


def _fsync(path):
    """Flushes one file or folder (its entries) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_warmup(saved_dir, records):
    os.makedirs(os.path.join(saved_dir, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(saved_dir, WARMUP_FILE)) as writer:
        for record in records:
            writer.write(record.SerializeToString())


def export_run(
    run_dir,
    export_dir,
    model_name=None,
    version=None,
    top_k=100,
    exclude_history=False,
    unless_exported=False,
    log=None,
):
    """Exports a training run's best model (``model.keras`` + ``vocabulary.txt``).

    ``model_name`` defaults to the run's model kind (``config.json``).
    ``export.json`` names the run, the sha256 of its ``model.keras``, its best
    epoch and whether its training had finished (a ``metrics.json`` of its last
    epoch); ``log`` (e.g. ``print``) gets a warning line for a run that had not
    (still training, or stopped: its best model so far). ``unless_exported``:
    when the newest version there is this very export (the same model file,
    run, epochs and settings), return it instead of publishing a copy (a rerun
    of a finished training would make the servers reload for nothing; see
    :func:`export_saved_model`). Returns the version folder; raises ValueError naming
    a missing or unreadable file.
    """
    import hybrid_tfrs.retrieval  # noqa: F401  (registers the classes model.keras names)
    from hybrid_tfrs.data import Vocabulary
    from hybrid_tfrs.data.datasets import file_sha256
    from hybrid_tfrs.run_dir import METRICS_FILE, read_json, read_state
    from hybrid_tfrs.training import load_run_model

    names = ("config.json", "model.keras", VOCABULARY_FILE)
    paths = {name: os.path.join(run_dir, name) for name in names}
    for path in paths.values():
        if not os.path.exists(path):
            raise ValueError(f"{path} not found; is --run_dir a training output folder?")
    config = read_json(paths["config.json"])  # RunDirError (a ValueError) naming the file
    if not isinstance(config, dict) or "model" not in config:
        raise ValueError(f"{paths['config.json']}: no model kind in it")
    state = read_state(run_dir) or {}
    metrics_path = os.path.join(run_dir, METRICS_FILE)
    metrics = read_json(metrics_path) if os.path.exists(metrics_path) else {}
    source = {
        "run_dir": os.path.abspath(run_dir),
        "model_sha256": file_sha256(paths["model.keras"]),
        "best_epoch": state.get("best_epoch"),
        "epochs_trained": state.get("epochs_done"),
        # metrics.json is written at the end; a resumed run keeps its old one meanwhile
        "finished": bool(metrics) and metrics.get("epochs_trained") == state.get("epochs_done"),
    }
    if not source["finished"] and log:
        so_far = f" (epoch {source['best_epoch']})" if source["best_epoch"] else ""
        log(
            f"warning: {run_dir}: its training has not finished (no {METRICS_FILE} of its "
            f"last epoch); exporting its best model so far{so_far}"
        )
    model = load_run_model(paths["model.keras"], way_out="export a run whose training finished")
    vocabulary = Vocabulary.load(paths[VOCABULARY_FILE])
    return export_saved_model(
        model,
        vocabulary,
        export_dir,
        model_name or config["model"],
        version=version,
        top_k=top_k,
        exclude_history=exclude_history,
        source=source,
        unless_exported=unless_exported,
    )


def _read_export_info(version_dir):
    """A version's ``export.json`` without its number; None if it has none readable."""
    try:
        with open(os.path.join(version_dir, EXPORT_INFO_FILE), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return {key: value for key, value in info.items() if key != "version"}
