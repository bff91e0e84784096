"""A local stand-in for ``tensorflow_model_server`` (the subset this model uses).

    python -m serving.server --port=8500 --rest_api_port=8501 \
        --model_name=hybrid --model_base_path=$PWD/exported/hybrid
    python -m serving.server --port=8500 --rest_api_port=8501 \
        --model_config_file=serving/models.config --enable_batching

TensorFlow Serving's binary is neither on PyPI nor in Debian, so this server
implements, over the same export folder and with the same flags, the parts of
its API that ``serving.client`` uses:

- gRPC ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata)
  and ``tensorflow.serving.ModelService`` (GetModelStatus);
- REST ``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict`` (columnar
  ``"inputs"`` format), ``GET /v1/models/<name>[/versions/<v>]`` (status) and
  ``GET .../metadata``.

It loads the newest numeric version folders of each model (version policy from
the config file, default: the latest one), replays their warmup requests,
polls for new versions every ``--file_system_poll_wait_seconds`` and swaps a
newly loaded version in atomically (in-flight requests finish on the old one).
With ``--enable_batching`` a batching thread merges requests for the same
model version, signature and scalar inputs that arrive within
``--batch_timeout_micros``, up to ``--max_batch_size`` rows. Errors carry the
status codes TensorFlow Serving uses (REST: 404/400 with ``{"error": ...}``).
"""

import base64
import concurrent.futures
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from google.protobuf import (  # noqa: E402
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    text_format,
)
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow.core.protobuf import error_codes_pb2, saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import file_system_storage_path_source_pb2  # noqa: E402

from serving import HTTP_STATUS, ServingError  # noqa: E402

log = logging.getLogger("serving.server")

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
DEFAULT_SIGNATURE = "serving_default"


# ---------------------------------------------------------------- model config


def _model_server_config_class():
    """``tensorflow.serving.ModelServerConfig`` (its .proto is not in the pip package).

    Rebuilt here with the real field names and numbers, so text-format config
    files parse exactly as TensorFlow Serving parses them.
    """
    source = file_system_storage_path_source_pb2.DESCRIPTOR
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(source.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="serving_stand_in/model_server_config.proto",
        package="tensorflow.serving",
        dependency=[source.name],
        syntax="proto3",
    )
    field = descriptor_pb2.FieldDescriptorProto
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED

    def add(message, name, number, kind, label=optional, type_name=None):
        message.field.add(name=name, number=number, type=kind, label=label, type_name=type_name)

    config = proto.message_type.add(name="ModelConfig")
    add(config, "name", 1, field.TYPE_STRING)
    add(config, "base_path", 2, field.TYPE_STRING)
    add(config, "model_type", 3, field.TYPE_INT32)
    add(config, "model_platform", 4, field.TYPE_STRING)
    add(
        config,
        "model_version_policy",
        7,
        field.TYPE_MESSAGE,
        type_name=".tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy",
    )
    labels = config.nested_type.add(name="VersionLabelsEntry")
    labels.options.map_entry = True
    add(labels, "key", 1, field.TYPE_STRING)
    add(labels, "value", 2, field.TYPE_INT64)
    add(
        config,
        "version_labels",
        8,
        field.TYPE_MESSAGE,
        repeated,
        ".tensorflow.serving.ModelConfig.VersionLabelsEntry",
    )
    config_list = proto.message_type.add(name="ModelConfigList")
    add(config_list, "config", 1, field.TYPE_MESSAGE, repeated, ".tensorflow.serving.ModelConfig")
    server = proto.message_type.add(name="ModelServerConfig")
    add(
        server,
        "model_config_list",
        1,
        field.TYPE_MESSAGE,
        type_name=".tensorflow.serving.ModelConfigList",
    )
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.ModelServerConfig")
    )


class ModelConfig:
    """One served model: name, base path, version policy and version labels."""

    def __init__(self, name, base_path, policy=None, labels=None):
        self.name = name
        self.base_path = base_path
        self.policy = policy or ("latest", 1)
        self.labels = dict(labels or {})

    def select(self, versions):
        """The versions to keep loaded among the available ones."""
        kind, value = self.policy
        if kind == "all":
            return set(versions)
        if kind == "specific":
            return set(versions) & set(value)
        return set(sorted(versions)[-value:])


def read_model_config_file(path):
    """Parses a text-format ModelServerConfig; ValueError naming the file on a problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        proto = text_format.Parse(text, _model_server_config_class()())
    except (OSError, text_format.ParseError) as error:
        raise ValueError(f"--model_config_file={path}: {error}") from None
    configs = []
    for entry in proto.model_config_list.config:
        if entry.model_platform not in ("", "tensorflow"):
            raise ValueError(f"{path}: model {entry.name!r}: only model_platform 'tensorflow'")
        if not entry.name or not entry.base_path:
            raise ValueError(f"{path}: every config needs a name and a base_path")
        policy = entry.model_version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "all":
            rule = ("all", None)
        elif which == "specific":
            rule = ("specific", tuple(policy.specific.versions))
        else:
            rule = ("latest", max(policy.latest.num_versions, 1) if which else 1)
        base_path = os.path.abspath(entry.base_path)  # relative: to the working folder
        configs.append(ModelConfig(entry.name, base_path, rule, entry.version_labels))
    if not configs:
        raise ValueError(f"{path}: no model in model_config_list")
    return configs


# ---------------------------------------------------------------- loaded models


def dtype_name(dtype):
    """tf.string -> "DT_STRING"."""
    return types_pb2.DataType.Name(tf.dtypes.as_dtype(dtype).as_datatype_enum)


def dtype_of(array):
    """The TensorFlow dtype of a request array (object/bytes/str arrays are strings)."""
    if array.dtype.kind in "OSU":
        return tf.string
    return tf.dtypes.as_dtype(array.dtype)


def _shape_text(shape):
    return "[" + ",".join("?" if d is None else str(d) for d in shape.as_list()) + "]"


def _error_message(error):
    """A TensorFlow error's message without the graph dump (keeps 'assertion failed: ...')."""
    message = error.message
    match = re.search(r"assertion failed: (.*?)(?:\n|\s*\[\[\{\{node|$)", message, re.S)
    if match:  # "[text] [values]" -> "text values"
        return re.sub(r"^\[(.*?)\] ", r"\1 ", match.group(1).strip())
    return message.split("\n\t [[")[0].strip()


class Signature:
    """One signature of a loaded version, with input checks.

    Inputs and outputs are dicts of numpy arrays keyed by alias; strings are
    object arrays of bytes.
    """

    def __init__(self, name, function, signature_def):
        self.name = name
        self.function = function
        self.inputs = {
            alias: (tf.dtypes.as_dtype(info.dtype), tf.TensorShape(info.tensor_shape))
            for alias, info in signature_def.inputs.items()
        }
        # Inputs with a leading batch dimension can be merged across requests.
        self.batch_inputs = tuple(
            alias for alias, (_, shape) in self.inputs.items() if shape.rank and shape[0] is None
        )

    def describe(self):
        return ", ".join(
            f"{alias} ({dtype_name(dtype)} {_shape_text(shape)})"
            for alias, (dtype, shape) in sorted(self.inputs.items())
        )

    def check_aliases(self, aliases):
        """Raises INVALID_ARGUMENT unless ``aliases`` are exactly the signature's inputs."""
        missing = sorted(set(self.inputs) - set(aliases))
        extra = sorted(set(aliases) - set(self.inputs))
        if missing or extra:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"signature {self.name!r} takes {self.describe() or 'no inputs'}; "
                f"missing: {missing}, unexpected: {extra}",
            )

    def check(self, inputs):
        """Raises INVALID_ARGUMENT for a missing, extra, mistyped or misshapen input."""
        self.check_aliases(inputs)
        for alias, array in inputs.items():
            dtype, shape = self.inputs[alias]
            if dtype_of(array) != dtype:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"input {alias!r} of signature {self.name!r} must be "
                    f"{dtype_name(dtype)}, got {dtype_name(dtype_of(array))}",
                )
            if not shape.is_compatible_with(array.shape):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"input {alias!r} of signature {self.name!r} must have shape "
                    f"{_shape_text(shape)}, got {list(array.shape)}",
                )

    def run(self, inputs):
        """Runs the signature on checked inputs -> dict of numpy arrays."""
        tensors = {
            alias: tf.constant(array, dtype=self.inputs[alias][0])
            for alias, array in inputs.items()
        }
        try:
            outputs = self.function(**tensors)
        except tf.errors.OpError as error:
            code = error_codes_pb2.Code.Name(error.error_code)
            raise ServingError(code, _error_message(error)) from None
        return {alias: tensor.numpy() for alias, tensor in outputs.items()}


class Servable:
    """One loaded version of a model: its signatures and SignatureDefs."""

    def __init__(self, name, version, path):
        self.name = name
        self.version = version
        self.path = path
        self.module = tf.saved_model.load(path)
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            meta_graph = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0]
        self.signature_defs = meta_graph.signature_def
        self.signatures = {
            name: Signature(name, function, self.signature_defs[name])
            for name, function in self.module.signatures.items()
        }

    def signature(self, name):
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"serving signature key {name!r} not found; "
                f"{self.name} version {self.version} has {sorted(self.signatures)}",
            )
        return self.signatures[name]

    def warm_up(self, log_path):
        """Replays the PredictionLog records of assets.extra (as TensorFlow Serving does)."""
        count = 0
        for record in tf.data.TFRecordDataset(log_path):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                raise ValueError(f"{log_path}: only predict_log warmup records are supported")
            request = entry.predict_log.request
            signature = self.signature(request.model_spec.signature_name)
            inputs = {alias: tensor_to_array(proto) for alias, proto in request.inputs.items()}
            signature.check(inputs)
            signature.run(inputs)
            count += 1
        return count


class ServedModel:
    """The loaded versions of one model, refreshed from its base path by ``poll``."""

    def __init__(self, config, warmup=True):
        self.config = config
        self.name = config.name
        self.warmup = warmup
        self.versions = {}  # version -> Servable; replaced whole, never mutated
        self.failed = {}  # version -> error message (not retried)
        self._poll_lock = threading.Lock()

    def available_versions(self):
        """Numeric version folders holding a saved_model.pb (others, e.g. temp folders, ignored)."""
        try:
            names = os.listdir(self.config.base_path)
        except OSError:
            return set()
        return {
            int(name)
            for name in names
            if name.isdigit()
            and os.path.isfile(os.path.join(self.config.base_path, name, "saved_model.pb"))
        }

    def poll(self):
        """Loads wanted versions not loaded yet, then swaps the version map in one step."""
        with self._poll_lock:
            wanted = self.config.select(self.available_versions() - set(self.failed))
            loaded = dict(self.versions)
            for version in sorted(wanted - set(loaded), reverse=True):
                servable = self._load(version)
                if servable is not None:
                    loaded[version] = servable
            for version in sorted(set(loaded) - wanted):
                log.info("unloading %s version %d", self.name, version)
            self.versions = {v: s for v, s in loaded.items() if v in wanted}

    def _load(self, version):
        path = os.path.join(self.config.base_path, str(version))
        started = time.perf_counter()
        try:
            servable = Servable(self.name, version, path)
            warmup_path = os.path.join(path, WARMUP_FILE)
            replayed = (
                servable.warm_up(warmup_path) if self.warmup and os.path.exists(warmup_path) else 0
            )
        except Exception as error:  # a broken version must not stop the server
            self.failed[version] = f"{type(error).__name__}: {error}"
            log.error("failed to load %s version %d: %s", self.name, version, self.failed[version])
            return None
        log.info(
            "loaded %s version %d in %.1fs (%d warmup requests)",
            self.name,
            version,
            time.perf_counter() - started,
            replayed,
        )
        return servable

    def servable(self, version=None, label=None):
        """The newest loaded version, or the one asked for; NOT_FOUND otherwise."""
        versions = self.versions
        if label:
            if label not in self.config.labels:
                raise ServingError(
                    "NOT_FOUND", f"model {self.name!r} has no version label {label!r}"
                )
            version = self.config.labels[label]
        if version is None:
            if not versions:
                raise ServingError(
                    "NOT_FOUND",
                    f"servable not found for request: Latest({self.name}): no version loaded "
                    f"from {self.config.base_path}",
                )
            return versions[max(versions)]
        if version not in versions:
            raise ServingError(
                "NOT_FOUND",
                f"servable not found for request: Specific({self.name}, {version}); "
                f"loaded versions: {sorted(versions)}",
            )
        return versions[version]

    def status(self, version=None):
        """[(version, state name, error code name, error message)], newest first."""
        rows = [(v, "AVAILABLE", "OK", "") for v in self.versions]
        rows += [(v, "END", "UNKNOWN", message) for v, message in list(self.failed.items())]
        if version is not None:
            rows = [row for row in rows if row[0] == version]
            if not rows:
                raise ServingError("NOT_FOUND", f"model {self.name!r} has no version {version}")
        return sorted(rows, reverse=True)


# ---------------------------------------------------------------- batching


class _Task:
    def __init__(self, signature, inputs, key, rows):
        self.signature = signature
        self.inputs = inputs
        self.key = key
        self.rows = rows
        self.future = concurrent.futures.Future()


def _stack_rows(arrays):
    """Concatenates arrays along axis 0, padding string arrays' other axes with b""."""
    if arrays[0].dtype.kind != "O":
        return np.concatenate(arrays)
    shape = [sum(a.shape[0] for a in arrays)] + list(np.max([a.shape[1:] for a in arrays], axis=0))
    merged = np.full(shape, b"", dtype=object)
    start = 0
    for array in arrays:
        merged[
            (slice(start, start + array.shape[0]),) + tuple(slice(0, d) for d in array.shape[1:])
        ] = array
        start += array.shape[0]
    return merged


def _merge_key(signature, inputs):
    """Requests with equal keys can share a batch: same signature, same non-batch inputs."""
    key = [signature]
    for alias, array in sorted(inputs.items()):
        if alias not in signature.batch_inputs:
            key.append((alias, array.dtype.str, array.shape, array.tobytes()))
        elif array.dtype.kind != "O":  # strings are padded instead
            key.append((alias, array.shape[1:]))
    return tuple(key)


class Batcher:
    """Merges concurrent requests into one signature call.

    Requests agree on the merge key (signature of one loaded version, values of
    scalar inputs, trailing shape of non-string inputs); string inputs of
    different widths are padded with "" (the history's padding value). A
    request waits at most ``timeout_s`` for others, and a batch holds at most
    ``max_batch_size`` rows. If a merged call fails, its requests are rerun one
    by one so that one bad request fails alone.
    """

    def __init__(self, max_batch_size, timeout_s):
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    def run(self, signature, inputs):
        if not signature.batch_inputs:
            return signature.run(inputs)
        rows = inputs[signature.batch_inputs[0]].shape[0]
        if rows > self.max_batch_size:
            return signature.run(inputs)
        task = _Task(signature, inputs, _merge_key(signature, inputs), rows)
        self._queue.put(task)
        return task.future.result()

    def stop(self):
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _loop(self):
        while True:
            first = self._queue.get()
            if first is None:
                return
            tasks, rows = [first], first.rows
            deadline = time.monotonic() + self.timeout_s
            while rows < self.max_batch_size:
                try:
                    task = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if task is None:
                    self._queue.put(None)
                    break
                tasks.append(task)
                rows += task.rows
            groups = {}
            for task in tasks:
                groups.setdefault(task.key, []).append(task)
            for group in groups.values():
                self._run_group(group)

    def _run_group(self, tasks):
        batch, rows = [], 0
        for task in tasks + [None]:
            if task is None or (batch and rows + task.rows > self.max_batch_size):
                self._run_batch(batch)
                batch, rows = [], 0
            if task is not None:
                batch.append(task)
                rows += task.rows

    def _run_batch(self, tasks):
        if len(tasks) == 1:
            self._run_alone(tasks[0])
            return
        signature = tasks[0].signature
        merged = {
            alias: _stack_rows([t.inputs[alias] for t in tasks])
            if alias in signature.batch_inputs
            else tasks[0].inputs[alias]
            for alias in tasks[0].inputs
        }
        try:
            outputs = signature.run(merged)
        except ServingError:
            for task in tasks:
                self._run_alone(task)
            return
        except Exception as error:  # noqa: BLE001 (handed to the callers)
            for task in tasks:
                task.future.set_exception(error)
            return
        total = sum(t.rows for t in tasks)
        start = 0
        for task in tasks:
            task.future.set_result(
                {
                    alias: out[start : start + task.rows]
                    if out.ndim and out.shape[0] == total
                    else out
                    for alias, out in outputs.items()
                }
            )
            start += task.rows

    @staticmethod
    def _run_alone(task):
        try:
            task.future.set_result(task.signature.run(task.inputs))
        except Exception as error:  # noqa: BLE001 (handed to the caller)
            task.future.set_exception(error)


# ---------------------------------------------------------------- the server core


class ModelServer:
    """Resolves model / version / signature and runs predictions (transport-neutral)."""

    def __init__(self, models, batcher=None):
        self.models = {model.name: model for model in models}
        self.batcher = batcher

    def model(self, name):
        if name not in self.models:
            raise ServingError(
                "NOT_FOUND",
                f"servable not found for request: Latest({name}): unknown model "
                f"(served: {sorted(self.models)})",
            )
        return self.models[name]

    def servable(self, name, version=None, label=None):
        """The loaded version a request names (NOT_FOUND if none)."""
        return self.model(name).servable(version, label)

    def predict(self, servable, signature_name, inputs, output_filter=()):
        """Runs a signature of a resolved version -> (signature name, outputs)."""
        signature = servable.signature(signature_name)
        signature.check(inputs)
        if self.batcher is not None:
            outputs = self.batcher.run(signature, inputs)
        else:
            outputs = signature.run(inputs)
        if output_filter:
            unknown = sorted(set(output_filter) - set(outputs))
            if unknown:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"output_filter: {unknown} not outputs of signature {signature.name!r}",
                )
            outputs = {alias: outputs[alias] for alias in output_filter}
        return signature.name, outputs

    def signature_def_map(self, servable):
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        return signature_map

    def status_response(self, name, version=None):
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state, code, message in self.model(name).status(version):
            entry = response.model_version_status.add(version=v)
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            entry.status.error_code = error_codes_pb2.Code.Value(code)
            entry.status.error_message = message
        return response


def tensor_to_array(proto):
    """TensorProto -> numpy array (strings as object arrays of bytes)."""
    try:
        return tf.make_ndarray(proto)
    except Exception as error:  # noqa: BLE001 (any decoding problem is the caller's)
        raise ServingError("INVALID_ARGUMENT", f"cannot decode tensor: {error}") from None


# ---------------------------------------------------------------- gRPC


def _grpc_call(context, handler):
    """Runs ``handler()``; ServingError and unexpected errors become gRPC statuses."""
    try:
        return handler()
    except ServingError as error:
        code, message = error.code, error.message
    except Exception as error:  # noqa: BLE001 (the server keeps serving)
        log.exception("internal error")
        code, message = "INTERNAL", f"{type(error).__name__}: {error}"
    context.abort(grpc.StatusCode[code], message)


def _version(model_spec):
    return model_spec.version.value if model_spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata."""

    def __init__(self, core):
        self.core = core

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        def handle():
            spec = request.model_spec
            servable = self.core.servable(spec.name, _version(spec), spec.version_label or None)
            inputs = {alias: tensor_to_array(proto) for alias, proto in request.inputs.items()}
            signature_name, outputs = self.core.predict(
                servable, spec.signature_name, inputs, tuple(request.output_filter)
            )
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature_name
            for alias, array in outputs.items():
                response.outputs[alias].CopyFrom(tf.make_tensor_proto(array))
            return response

        return _grpc_call(context, handle)

    def GetModelMetadata(self, request, context):  # noqa: N802 (gRPC method name)
        def handle():
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"metadata_field must be ['signature_def'] (the one supported), got {fields}",
                )
            spec = request.model_spec
            servable = self.core.servable(spec.name, _version(spec), spec.version_label or None)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(self.core.signature_def_map(servable))
            return response

        return _grpc_call(context, handle)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus."""

    def __init__(self, core):
        self.core = core

    def GetModelStatus(self, request, context):  # noqa: N802 (gRPC method name)
        spec = request.model_spec
        return _grpc_call(
            context,
            lambda: self.core.status_response(spec.name, _version(spec)),
        )


def start_grpc_server(core, address, port, max_threads):
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=max_threads),
        options=[
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
    try:
        bound = server.add_insecure_port(f"{address}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise ValueError(f"--port={port}: cannot bind {address}:{port} (in use?)")
    server.start()
    return server


# ---------------------------------------------------------------- REST


_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>:predict|/metadata)?$"
)


def _json_shape(value, alias):
    """Shape of a nested JSON list; INVALID_ARGUMENT if ragged."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    shapes = {_json_shape(item, alias) for item in value}
    if len(shapes) != 1:
        raise ServingError("INVALID_ARGUMENT", f"input {alias!r}: nested lists of unequal lengths")
    return (len(value),) + shapes.pop()


def _json_leaves(value):
    if isinstance(value, list):
        for item in value:
            yield from _json_leaves(item)
    else:
        yield value


def json_to_array(value, alias, dtype):
    """A JSON input value -> numpy array of the signature's dtype (INVALID_ARGUMENT if it can't)."""
    shape = _json_shape(value, alias)
    leaves = list(_json_leaves(value))
    wanted = dtype_name(dtype)

    def bad(leaf):
        return ServingError(
            "INVALID_ARGUMENT",
            f"input {alias!r}: JSON value {json.dumps(leaf)[:40]} is not of expected type {wanted}",
        )

    if dtype == tf.string:
        converted = []
        for leaf in leaves:
            if isinstance(leaf, str):
                converted.append(leaf.encode("utf-8"))
            elif isinstance(leaf, dict) and set(leaf) == {"b64"} and isinstance(leaf["b64"], str):
                try:
                    converted.append(base64.b64decode(leaf["b64"], validate=True))
                except ValueError:
                    raise bad(leaf) from None
            else:
                raise bad(leaf)
        array = np.empty(len(converted), dtype=object)
        array[:] = converted
        return array.reshape(shape)
    if dtype == tf.bool:
        fits = lambda leaf: isinstance(leaf, bool)  # noqa: E731
    elif dtype.is_integer:
        fits = lambda leaf: (  # noqa: E731
            isinstance(leaf, int) and not isinstance(leaf, bool) and dtype.min <= leaf <= dtype.max
        )
    elif dtype.is_floating:
        fits = lambda leaf: isinstance(leaf, int | float) and not isinstance(leaf, bool)  # noqa: E731
    else:
        raise ServingError("INVALID_ARGUMENT", f"input {alias!r}: {wanted} is not supported")
    for leaf in leaves:
        if not fits(leaf):
            raise bad(leaf)
    return np.array(leaves, dtype=dtype.as_numpy_dtype).reshape(shape)


def array_to_json(array, alias):
    """Numpy output -> JSON (strings as text; {"b64": ...} if not UTF-8 or alias ends _bytes)."""
    if array.dtype.kind != "O":
        return array.tolist()
    as_b64 = alias.endswith("_bytes")

    def convert(value):
        if not as_b64:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode("ascii")}

    return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else array.tolist()


class RestHandler(BaseHTTPRequestHandler):
    """TensorFlow Serving's REST API (predict in the columnar format, status, metadata)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server_version = "hybrid-tfrs-serving-stand-in"
    core = None  # set by start_rest_server

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        log.debug("rest: " + format, *args)

    def do_GET(self):  # noqa: N802 (http.server method name)
        self._handle("GET")

    def do_POST(self):  # noqa: N802 (http.server method name)
        self._handle("POST")

    def _handle(self, method):
        try:
            body = self._route(method)
            status = 200
        except ServingError as error:
            status, body = HTTP_STATUS.get(error.code, 500), {"error": error.message}
        except Exception as error:  # noqa: BLE001 (the server keeps serving)
            log.exception("internal error")
            status, body = 500, {"error": f"{type(error).__name__}: {error}"}
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        match = _REST_PATH.match(self.path.split("?")[0])
        suffix = match and match.group("suffix")
        if not match or (method == "POST") != (suffix == ":predict"):
            raise ServingError("NOT_FOUND", f"malformed request: {method} {self.path}")
        version = match.group("version")
        if version is not None:
            if not version.isdigit():
                raise ServingError(
                    "INVALID_ARGUMENT", f"version must be an integer, got {version!r}"
                )
            version = int(version)
        name, label = match.group("name"), match.group("label")
        if suffix == ":predict":
            return self._predict(name, version, label, raw_body)
        if suffix == "/metadata":
            servable = self.core.servable(name, version, label)
            signature_map = self.core.signature_def_map(servable)
            return {
                "model_spec": {
                    "name": name,
                    "signature_name": "",
                    "version": str(servable.version),
                },
                "metadata": {"signature_def": _to_dict(signature_map)},
            }
        if label is not None:
            version = self.core.servable(name, None, label).version
        return _to_dict(self.core.status_response(name, version))

    def _predict(self, name, version, label, raw_body):
        try:
            request = json.loads(raw_body or b"null")
        except ValueError as error:
            raise ServingError("INVALID_ARGUMENT", f"JSON parse error: {error}") from None
        if not isinstance(request, dict):
            raise ServingError("INVALID_ARGUMENT", "request body must be a JSON object")
        if "instances" in request:
            raise ServingError(
                "INVALID_ARGUMENT",
                'this server takes the columnar "inputs" format only (not "instances")',
            )
        servable = self.core.servable(name, version, label)
        signature = servable.signature(request.get("signature_name"))
        given = request.get("inputs", {})
        if not isinstance(given, dict):
            if len(signature.inputs) != 1:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f'"inputs" must name the inputs of {signature.name!r}: {signature.describe()}',
                )
            given = {next(iter(signature.inputs)): given}
        signature.check_aliases(given)
        inputs = {
            alias: json_to_array(value, alias, signature.inputs[alias][0])
            for alias, value in given.items()
        }
        _, outputs = self.core.predict(servable, signature.name, inputs)
        converted = {alias: array_to_json(array, alias) for alias, array in outputs.items()}
        return {"outputs": next(iter(converted.values())) if len(converted) == 1 else converted}


def _to_dict(message):
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def start_rest_server(core, address, port):
    handler = type("BoundRestHandler", (RestHandler,), {"core": core})
    try:
        server = ThreadingHTTPServer((address, port), handler)
    except OSError as error:
        raise ValueError(
            f"--rest_api_port={port}: cannot bind {address}:{port} ({error})"
        ) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="rest", daemon=True).start()
    return server


# ---------------------------------------------------------------- main


def define_flags():
    """tensorflow_model_server's flags (and this stand-in's --bind_address)."""
    flags.DEFINE_integer("port", 8500, "gRPC port.")
    flags.DEFINE_integer("rest_api_port", 0, "REST port (0: no REST API).")
    flags.DEFINE_string("model_name", "default", "Name of the model (with --model_base_path).")
    flags.DEFINE_string(
        "model_base_path", "", "Folder holding the model's numeric version folders."
    )
    flags.DEFINE_string("model_config_file", "", "Text-format ModelServerConfig (several models).")
    flags.DEFINE_float(
        "file_system_poll_wait_seconds",
        1.0,
        "Seconds between polls for new versions (0: poll once at start; < 0: never).",
    )
    flags.DEFINE_boolean("enable_batching", False, "Merge concurrent requests into batches.")
    flags.DEFINE_integer("max_batch_size", 128, "Rows (histories) per merged batch.", lower_bound=1)
    flags.DEFINE_integer(
        "batch_timeout_micros",
        1000,
        "Longest wait for other requests to batch with.",
        lower_bound=0,
    )
    flags.DEFINE_boolean(
        "enable_model_warmup", True, "Replay assets.extra warmup requests at load."
    )
    flags.DEFINE_integer("grpc_max_threads", 16, "gRPC worker threads.", lower_bound=1)
    flags.DEFINE_string(
        "bind_address",
        "127.0.0.1",
        "Address both servers bind (this stand-in's own flag; TF Serving binds all: 0.0.0.0).",
    )


FLAGS = flags.FLAGS


def model_configs(config_file, model_name, model_base_path):
    """The models to serve, from --model_config_file or --model_name/--model_base_path."""
    if config_file:
        configs = read_model_config_file(config_file)
    elif model_base_path:
        configs = [ModelConfig(model_name, os.path.abspath(model_base_path))]
    else:
        raise ValueError("give --model_base_path (with --model_name) or --model_config_file")
    for config in configs:
        if not os.path.isdir(config.base_path):
            raise ValueError(f"model {config.name!r}: base path {config.base_path} is not a folder")
    return configs


def _poll_forever(models, wait_s, stop):
    while not stop.wait(wait_s):
        for model in models:
            try:
                model.poll()
            except Exception:  # noqa: BLE001 (keep polling)
                log.exception("polling %s failed", model.name)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        models = [
            ServedModel(config, FLAGS.enable_model_warmup)
            for config in model_configs(
                FLAGS.model_config_file, FLAGS.model_name, FLAGS.model_base_path
            )
        ]
        if FLAGS.file_system_poll_wait_seconds >= 0:
            for model in models:
                model.poll()
        batcher = (
            Batcher(FLAGS.max_batch_size, FLAGS.batch_timeout_micros / 1e6)
            if FLAGS.enable_batching
            else None
        )
        core = ModelServer(models, batcher)
        grpc_server = start_grpc_server(
            core, FLAGS.bind_address, FLAGS.port, FLAGS.grpc_max_threads
        )
        rest_server = (
            start_rest_server(core, FLAGS.bind_address, FLAGS.rest_api_port)
            if FLAGS.rest_api_port
            else None
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if FLAGS.file_system_poll_wait_seconds > 0:
        threading.Thread(
            target=_poll_forever,
            args=(models, FLAGS.file_system_poll_wait_seconds, stop),
            name="poll",
            daemon=True,
        ).start()
    rest = FLAGS.rest_api_port if rest_server else "0 (off)"
    for model in models:
        version = max(model.versions) if model.versions else "none yet"
        print(
            f"serving {model.name} version {version} on grpc port {FLAGS.port}, rest port {rest}",
            flush=True,
        )
    stop.wait()
    log.info("stopping")
    grpc_server.stop(grace=2).wait()
    if rest_server is not None:
        rest_server.shutdown()
        rest_server.server_close()
    if batcher is not None:
        batcher.stop()
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
