"""One loaded model version: its signatures, their input checks and their calls."""

import os
import re

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import error_codes_pb2, saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from hybrid_tfrs.serving import ServingError, clip

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


class LoadError(Exception):
    """A version that cannot be served; ``code`` and ``message`` go to GetModelStatus."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def dtype_name(dtype):
    """tf.string -> "DT_STRING"."""
    return types_pb2.DataType.Name(tf.dtypes.as_dtype(dtype).as_datatype_enum)


def dtype_of(array):
    """The TensorFlow dtype of a request array (object/bytes/str arrays are strings)."""
    if array.dtype.kind in "OSU":
        return tf.string
    return tf.dtypes.as_dtype(array.dtype)


def shape_text(shape):
    return "[" + ",".join("?" if d is None else str(d) for d in shape.as_list()) + "]"


def op_error_message(error):
    """A TensorFlow error's message without the graph dump (keeps 'assertion failed: ...')."""
    message = error.message
    match = re.search(r"assertion failed: (.*?)(?:\n|\s*\[\[\{\{node|$)", message, re.S)
    if match:  # "[text] [values]" -> "text values"
        return clip(re.sub(r"^\[(.*?)\] ", r"\1 ", match.group(1).strip()), 1000)
    return clip(message.split("\n")[0].split(" [[")[0].strip(), 1000)


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
            f"{alias} ({dtype_name(dtype)} {shape_text(shape)})"
            for alias, (dtype, shape) in sorted(self.inputs.items())
        )

    def check_aliases(self, aliases):
        """Raises INVALID_ARGUMENT unless ``aliases`` are exactly the signature's inputs."""
        missing = sorted(set(self.inputs) - set(aliases))
        extra = sorted(clip(alias, 50) for alias in set(aliases) - set(self.inputs))[:10]
        if missing or extra:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"signature {self.name!r} takes {self.describe() or 'no inputs'}; "
                f"missing: {missing}, unexpected: {extra}",
            )

    def rows(self, inputs):
        """Rows of a checked request: the leading size of its batch inputs (0 if none)."""
        return inputs[self.batch_inputs[0]].shape[0] if self.batch_inputs else 0

    def check(self, inputs, max_rows):
        """INVALID_ARGUMENT for a missing, extra, mistyped or misshapen input, or too many rows."""
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
                    f"{shape_text(shape)}, got {list(array.shape)}",
                )
        if self.rows(inputs) > max_rows:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"{self.rows(inputs)} rows in one request; at most {max_rows} "
                "(--max_rows_per_request): split the request",
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
            if code in ("INTERNAL", "UNKNOWN") and _is_parse_error(error):
                code = "INVALID_ARGUMENT"
            raise ServingError(code, op_error_message(error)) from None
        except UnicodeDecodeError:  # TF's error message quoted non-UTF-8 bytes of the request
            raise ServingError(
                "INVALID_ARGUMENT",
                f"signature {self.name!r} could not read the request's values "
                "(e.g. a serialized tf.Example that does not parse)",
            ) from None
        return {alias: tensor.numpy() for alias, tensor in outputs.items()}


def _is_parse_error(error):
    """A request the graph could not parse (e.g. a garbage tf.Example): the caller's fault."""
    return bool(
        re.search(r"[Cc]ould not parse|[Pp]arse ?[Ee]xample|Name: <unknown>", error.message)
    )


class Servable:
    """One loaded version of a model: its signatures and SignatureDefs.

    Raises ``LoadError`` (with a code and a one-line message) if the folder
    holds no loadable SavedModel.
    """

    def __init__(self, name, version, path):
        self.name = name
        self.version = version
        self.path = path
        pb_path = os.path.join(path, "saved_model.pb")
        try:
            with open(pb_path, "rb") as f:
                saved_model = saved_model_pb2.SavedModel.FromString(f.read())
        except FileNotFoundError:
            raise LoadError("NOT_FOUND", f"no saved_model.pb in {path}") from None
        except DecodeError:
            raise LoadError(
                "DATA_LOSS", f"{pb_path} cannot be parsed (truncated or corrupt)"
            ) from None
        if not saved_model.meta_graphs:
            raise LoadError("DATA_LOSS", f"{pb_path} holds no MetaGraph")
        self.signature_defs = saved_model.meta_graphs[0].signature_def
        try:
            self.module = tf.saved_model.load(path)
        except tf.errors.OpError as error:
            code = error_codes_pb2.Code.Name(error.error_code)
            raise LoadError(code, op_error_message(error)) from None
        except Exception as error:  # noqa: BLE001 (any loader failure is this version's)
            first_line = str(error).strip().split("\n")[0]
            raise LoadError("UNKNOWN", clip(f"cannot load {path}: {first_line}", 1000)) from None
        self.signatures = {
            name: Signature(name, function, self.signature_defs[name])
            for name, function in self.module.signatures.items()
        }

    def signature(self, name):
        """The named signature (default: serving_default); INVALID_ARGUMENT if absent."""
        name = name or DEFAULT_SIGNATURE
        if not isinstance(name, str):
            raise ServingError(
                "INVALID_ARGUMENT", f"signature_name must be a string, got {clip(name)}"
            )
        if name not in self.signatures:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"serving signature key {clip(name)!r} not found; "
                f"{self.name} version {self.version} has {sorted(self.signatures)}",
            )
        return self.signatures[name]

    def warm_up(self, max_rows):
        """Replays the PredictionLog records of assets.extra (as TensorFlow Serving does)."""
        log_path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(log_path):
            return 0
        count = 0
        try:
            for record in tf.data.TFRecordDataset(log_path):
                entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
                if entry.WhichOneof("log_type") != "predict_log":
                    raise LoadError("INVALID_ARGUMENT", f"{log_path}: only predict_log records")
                request = entry.predict_log.request
                signature = self.signature(request.model_spec.signature_name)
                inputs = {alias: tf.make_ndarray(t) for alias, t in request.inputs.items()}
                signature.check(inputs, max_rows)
                signature.run(inputs)
                count += 1
        except ServingError as error:
            raise LoadError(
                error.code, f"warmup request {count + 1} failed: {error.message}"
            ) from None
        except (tf.errors.OpError, DecodeError) as error:
            raise LoadError("DATA_LOSS", f"{log_path}: unreadable record {count + 1}") from error
        return count
