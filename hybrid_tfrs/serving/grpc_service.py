"""The gRPC front end: PredictionService and ModelService, with checked request decoding.

Requests are parsed by a deserializer that turns an unparsable message into
INVALID_ARGUMENT (gRPC's own answer would be INTERNAL), and every input tensor's
declared shape, dtype and value count are checked before it is decoded.
"""

import concurrent.futures
import logging
import math

import grpc
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from hybrid_tfrs.serving import ServingError, clip
from hybrid_tfrs.serving.limits import MAX_RANK, MESSAGE_LIMIT

log = logging.getLogger("hybrid_tfrs.serving")

# dtypes a request may carry: numbers, bools and strings.
_ACCEPTED_DTYPES = {
    types_pb2.DT_STRING,
    types_pb2.DT_BOOL,
    types_pb2.DT_HALF,
    types_pb2.DT_FLOAT,
    types_pb2.DT_DOUBLE,
    types_pb2.DT_INT8,
    types_pb2.DT_INT16,
    types_pb2.DT_INT32,
    types_pb2.DT_INT64,
    types_pb2.DT_UINT8,
    types_pb2.DT_UINT16,
    types_pb2.DT_UINT32,
    types_pb2.DT_UINT64,
}
_VALUE_FIELDS = (
    "half_val",
    "float_val",
    "double_val",
    "int_val",
    "string_val",
    "int64_val",
    "bool_val",
    "uint32_val",
    "uint64_val",
)


def decode_tensor(proto, alias, max_elements):
    """TensorProto -> numpy array, refusing before any allocation a tensor whose
    declared shape is invalid or over ``max_elements`` values, or whose values do
    not match its shape (INVALID_ARGUMENT)."""
    name = clip(alias, 50)

    def invalid(message):
        return ServingError("INVALID_ARGUMENT", f"input {name!r}: {message}")

    if proto.dtype not in _ACCEPTED_DTYPES:
        kind = (
            types_pb2.DataType.Name(proto.dtype)
            if proto.dtype in types_pb2.DataType.values()
            else proto.dtype
        )
        raise invalid(f"dtype {kind} is not accepted")
    if proto.tensor_shape.unknown_rank:
        raise invalid("the shape must be known")
    dims = [d.size for d in proto.tensor_shape.dim]
    if len(dims) > MAX_RANK:
        raise invalid(f"rank {len(dims)} is above {MAX_RANK}")
    shape_text = clip(str(dims), 100)
    if any(d < 0 for d in dims):
        raise invalid(f"negative dimension in shape {shape_text}")
    elements = math.prod(dims)
    if elements > max_elements:
        raise invalid(
            f"shape {shape_text} declares {elements} values; at most {max_elements} "
            "(--max_tensor_elements)"
        )
    if proto.tensor_content:
        if proto.dtype == types_pb2.DT_STRING:
            raise invalid("strings travel in string_val, not tensor_content")
        itemsize = tf.dtypes.as_dtype(proto.dtype).size
        held = len(proto.tensor_content) // itemsize
        exact = len(proto.tensor_content) == elements * itemsize
    else:
        held = sum(len(getattr(proto, field)) for field in _VALUE_FIELDS)
        exact = held == elements
    if not exact:
        raise invalid(f"shape {shape_text} declares {elements} values, the request holds {held}")
    try:
        return tf.make_ndarray(proto)
    except Exception:  # noqa: BLE001 (any decoding problem is the caller's)
        raise invalid("cannot decode the tensor") from None


def _version(model_spec):
    return model_spec.version.value if model_spec.HasField("version") else None


class _Unparsable:
    """Stands for a request message that did not parse."""


def _parser(message_class):
    def parse(data):
        try:
            return message_class.FromString(data)
        except Exception:  # noqa: BLE001 (answered INVALID_ARGUMENT by the handler)
            return _Unparsable()

    return parse


def _unary(method, message_class, response_class):
    """A gRPC handler: parses safely, runs ``method(request)``, maps errors to statuses."""

    def handle(request, context):
        try:
            if isinstance(request, _Unparsable):
                raise ServingError(
                    "INVALID_ARGUMENT", f"the request is not a valid {message_class.__name__}"
                )
            return method(request)
        except ServingError as error:
            code, message = error.code, error.message
        except Exception:  # noqa: BLE001 (the server keeps serving)
            log.exception("internal error")
            code, message = "INTERNAL", "internal error (logged by the server)"
        context.abort(grpc.StatusCode[code], clip(message, MESSAGE_LIMIT))

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=_parser(message_class),
        response_serializer=response_class.SerializeToString,
    )


class PredictionService:
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata."""

    def __init__(self, core):
        self.core = core

    def predict(self, request):
        spec = request.model_spec
        servable = self.core.servable(spec.name, _version(spec), spec.version_label or None)
        max_elements = self.core.limits.max_tensor_elements
        inputs = {
            alias: decode_tensor(proto, alias, max_elements)
            for alias, proto in request.inputs.items()
        }
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

    def get_model_metadata(self, request):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"metadata_field must be ['signature_def'] (the one supported), got {clip(fields)}",
            )
        spec = request.model_spec
        servable = self.core.servable(spec.name, _version(spec), spec.version_label or None)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(self.core.signature_def_map(servable))
        return response


def start_grpc_server(core, address, port):
    """Serves PredictionService and ModelService on ``address:port`` with ``core.limits``."""
    limits = core.limits
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=limits.grpc_max_threads),
        maximum_concurrent_rpcs=limits.grpc_max_threads + limits.max_queued_requests,
        options=[
            ("grpc.max_send_message_length", limits.grpc_max_message_bytes),
            ("grpc.max_receive_message_length", limits.grpc_max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
        ],
    )
    predictions = PredictionService(core)

    def model_status(request):
        return core.status_response(request.model_spec.name, _version(request.model_spec))

    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "tensorflow.serving.PredictionService",
                {
                    "Predict": _unary(
                        predictions.predict,
                        predict_pb2.PredictRequest,
                        predict_pb2.PredictResponse,
                    ),
                    "GetModelMetadata": _unary(
                        predictions.get_model_metadata,
                        get_model_metadata_pb2.GetModelMetadataRequest,
                        get_model_metadata_pb2.GetModelMetadataResponse,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                "tensorflow.serving.ModelService",
                {
                    "GetModelStatus": _unary(
                        model_status,
                        get_model_status_pb2.GetModelStatusRequest,
                        get_model_status_pb2.GetModelStatusResponse,
                    ),
                },
            ),
        )
    )
    try:
        bound = server.add_insecure_port(f"{address}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise ValueError(f"--port={port}: cannot bind {address}:{port} (in use?)")
    server.start()
    return server
