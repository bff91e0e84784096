"""The REST front end: TensorFlow Serving's HTTP API with bounded reads.

``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict`` in the columnar
(``"inputs"``) or row (``"instances"``) format, ``GET /v1/models/<name>[/versions/<v>]``
(status) and ``GET .../metadata``. A body is read only if its Content-Length is
within ``--rest_max_body_bytes``, and within ``--rest_read_timeout_seconds``.
"""

import base64
import json
import logging
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from hybrid_tfrs.serving import HTTP_STATUS, ServingError, clip
from hybrid_tfrs.serving.batching import stack_rows
from hybrid_tfrs.serving.limits import MAX_RANK, MESSAGE_LIMIT
from hybrid_tfrs.serving.servable import dtype_name

log = logging.getLogger("hybrid_tfrs.serving")

_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>:predict|/metadata)?$"
)


def _invalid(message):
    return ServingError("INVALID_ARGUMENT", message)


def json_shape(value, alias, max_elements):
    """(shape, leaves in row-major order) of nested JSON lists; INVALID_ARGUMENT if ragged,
    deeper than MAX_RANK or over ``max_elements`` values."""
    shape, level = [], [value]
    while any(isinstance(item, list) for item in level):
        lengths = {len(item) if isinstance(item, list) else -1 for item in level}
        if len(lengths) != 1:
            raise _invalid(f"input {clip(alias, 50)!r}: nested lists of unequal lengths")
        shape.append(lengths.pop())
        if len(shape) > MAX_RANK:
            raise _invalid(f"input {clip(alias, 50)!r}: lists nested deeper than {MAX_RANK}")
        level = [leaf for item in level for leaf in item]
        if len(level) > max_elements:
            raise _invalid(
                f"input {clip(alias, 50)!r}: more than {max_elements} values "
                "(--max_tensor_elements)"
            )
    return tuple(shape), level


def json_to_array(value, alias, dtype, max_elements):
    """A JSON input value -> numpy array of the signature's dtype (INVALID_ARGUMENT if it can't)."""
    shape, leaves = json_shape(value, alias, max_elements)
    wanted = dtype_name(dtype)

    def bad(leaf, why=f"is not of expected type {wanted}"):
        return _invalid(f"input {clip(alias, 50)!r}: JSON value {clip(json.dumps(leaf), 40)} {why}")

    if dtype == tf.string:
        converted = []
        for leaf in leaves:
            if isinstance(leaf, str):
                try:
                    converted.append(leaf.encode("utf-8"))
                except UnicodeEncodeError:
                    raise bad(leaf, "is not valid Unicode (lone surrogate)") from None
            elif isinstance(leaf, dict) and set(leaf) == {"b64"} and isinstance(leaf["b64"], str):
                try:
                    converted.append(base64.b64decode(leaf["b64"], validate=True))
                except ValueError:
                    raise bad(leaf, "is not valid base64") from None
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
        raise _invalid(f"input {clip(alias, 50)!r}: {wanted} is not supported")
    for leaf in leaves:
        if not fits(leaf):
            raise bad(leaf)
    try:
        return np.array(leaves, dtype=dtype.as_numpy_dtype).reshape(shape)
    except OverflowError:
        raise _invalid(f"input {clip(alias, 50)!r}: a value is out of range for {wanted}") from None


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


def columns_of_instances(instances, signature, max_rows, max_elements):
    """TF Serving's row format -> {alias: array}: one instance per row.

    An instance is an object naming the inputs, or a bare value when the
    signature has one input. Rows of string inputs of different widths are
    padded with "" (the history's padding); a scalar input (such as ``k``) must
    have the same value in every instance and is passed once.
    """
    if not isinstance(instances, list) or not instances:
        raise _invalid('"instances" must be a non-empty list')
    if len(instances) > max_rows:
        raise _invalid(
            f"{len(instances)} instances in one request; at most {max_rows} "
            "(--max_rows_per_request): split the request"
        )
    named = [isinstance(i, dict) and set(i) != {"b64"} for i in instances]
    if all(named):
        aliases = set(instances[0])
        if any(set(instance) != aliases for instance in instances):
            raise _invalid('every instance of "instances" must name the same inputs')
        signature.check_aliases(aliases)
        given = {alias: [instance[alias] for instance in instances] for alias in aliases}
    elif not any(named) and len(signature.inputs) == 1:
        given = {next(iter(signature.inputs)): instances}
    else:
        raise _invalid(
            f"each instance must be an object naming the inputs of {signature.name!r}: "
            f"{signature.describe()}"
        )
    columns = {}
    for alias, values in given.items():
        dtype, shape = signature.inputs[alias]
        if shape.rank == 0:
            if any(value != values[0] for value in values):
                raise _invalid(
                    f"input {alias!r} is a scalar: every instance must give it the same value"
                )
            columns[alias] = json_to_array(values[0], alias, dtype, max_elements)
            continue
        rows = [json_to_array(value, alias, dtype, max_elements)[None] for value in values]
        if dtype != tf.string and len({row.shape for row in rows}) != 1:
            raise _invalid(f"input {alias!r}: instances give it different shapes")
        if sum(row.size for row in rows) > max_elements:
            raise _invalid(
                f"input {alias!r}: more than {max_elements} values (--max_tensor_elements)"
            )
        columns[alias] = stack_rows(rows)
    return columns


def rows_of_outputs(outputs, rows):
    """Outputs -> TF Serving's "predictions": one entry per row (an object if several outputs)."""
    for alias, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != rows:
            raise _invalid(
                f'output {alias!r} has no row per instance; use the columnar "inputs" format'
            )
    converted = {alias: array_to_json(array, alias) for alias, array in outputs.items()}
    if len(converted) == 1:
        return next(iter(converted.values()))
    return [{alias: values[row] for alias, values in converted.items()} for row in range(rows)]


def _to_dict(message):
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class RestHandler(BaseHTTPRequestHandler):
    """One REST connection; ``core`` and ``timeout`` are set by ``start_rest_server``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server_version = "hybrid-tfrs-serving-stand-in"
    core = None
    timeout = None  # socket timeout of every read: --rest_read_timeout_seconds

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        log.debug("rest: " + format, *args)

    def do_GET(self):  # noqa: N802 (http.server method name)
        self._handle("GET")

    def do_POST(self):  # noqa: N802 (http.server method name)
        self._handle("POST")

    def _method_not_allowed(self):
        self.close_connection = True  # its body, if any, is not read
        self._reply(405, {"error": f"method {clip(self.command, 20)} not allowed: GET or POST"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _method_not_allowed

    def _handle(self, method):
        try:
            raw_body = self._read_body()
            status, body = 200, self._route(method, raw_body)
        except ConnectionError:  # while reading the body
            self._hung_up()
            return
        except ServingError as error:
            status = error.http_status or HTTP_STATUS.get(error.code, 500)
            body = {"error": clip(error.message, MESSAGE_LIMIT)}
        except Exception:  # noqa: BLE001 (the server keeps serving)
            log.exception("internal error")
            status, body = 500, {"error": "internal error (logged by the server)"}
        self._reply(status, body)

    def _reply(self, status, body):
        payload = json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except (ConnectionError, TimeoutError):
            self._hung_up()

    def _hung_up(self):
        log.info("rest: client %s hung up before the answer", self.client_address[0])
        self.close_connection = True

    def _read_body(self):
        """The request body, read only within the size limit and the read timeout."""
        limits = self.core.limits
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            raise ServingError(
                "INVALID_ARGUMENT",
                "chunked request bodies are not supported: send a Content-Length",
                411,
            )
        text = self.headers.get("Content-Length")
        if text is None:
            return b""
        if not re.fullmatch(r"[0-9]{1,19}", text.strip()):
            self.close_connection = True
            raise _invalid(f"Content-Length must be a non-negative integer, got {clip(text, 40)!r}")
        length = int(text)
        if length > limits.rest_max_body_bytes:
            self.close_connection = True
            raise ServingError(
                "RESOURCE_EXHAUSTED",
                f"request body of {length} bytes; at most {limits.rest_max_body_bytes} "
                "(--rest_max_body_bytes)",
                413,
            )
        deadline = time.monotonic() + limits.rest_read_timeout_seconds
        chunks, received = [], 0
        try:
            while received < length:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise TimeoutError
                self.connection.settimeout(remaining_s)
                chunk = self.rfile.read1(min(length - received, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
        except TimeoutError:
            self.close_connection = True
            raise ServingError(
                "DEADLINE_EXCEEDED",
                f"request body not received within {limits.rest_read_timeout_seconds:g}s "
                f"({received} of {length} bytes; --rest_read_timeout_seconds)",
                408,
            ) from None
        finally:
            self.connection.settimeout(self.timeout)
        if received < length:
            self.close_connection = True
            raise _invalid(f"request body ended after {received} of {length} bytes")
        return b"".join(chunks)

    def _route(self, method, raw_body):
        match = _REST_PATH.match(self.path.split("?")[0])
        suffix = match and match.group("suffix")
        if not match or (method == "POST") != (suffix == ":predict"):
            raise ServingError("NOT_FOUND", f"malformed request: {method} {clip(self.path)}")
        version = match.group("version")
        if version is not None:
            if not re.fullmatch(r"[0-9]{1,18}", version):
                raise _invalid(f"version must be an integer, got {clip(version)!r}")
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
        except (ValueError, RecursionError) as error:
            reason = (
                "nested too deeply" if isinstance(error, RecursionError) else clip(str(error), 100)
            )
            raise _invalid(f"JSON parse error: {reason}") from None
        if not isinstance(request, dict):
            raise _invalid("request body must be a JSON object")
        if ("inputs" in request) == ("instances" in request):
            raise _invalid('the request must hold either "inputs" (columnar) or "instances" (rows)')
        limits = self.core.limits
        servable = self.core.servable(name, version, label)
        signature = servable.signature(request.get("signature_name"))
        if "instances" in request:
            inputs = columns_of_instances(
                request["instances"],
                signature,
                limits.max_rows_per_request,
                limits.max_tensor_elements,
            )
            _, outputs = self.core.predict(servable, signature.name, inputs)
            return {"predictions": rows_of_outputs(outputs, signature.rows(inputs))}
        given = request["inputs"]
        if not isinstance(given, dict):
            if len(signature.inputs) != 1:
                raise _invalid(
                    f'"inputs" must name the inputs of {signature.name!r}: {signature.describe()}'
                )
            given = {next(iter(signature.inputs)): given}
        signature.check_aliases(given)
        inputs = {
            alias: json_to_array(
                value, alias, signature.inputs[alias][0], limits.max_tensor_elements
            )
            for alias, value in given.items()
        }
        _, outputs = self.core.predict(servable, signature.name, inputs)
        converted = {alias: array_to_json(array, alias) for alias, array in outputs.items()}
        return {"outputs": next(iter(converted.values())) if len(converted) == 1 else converted}


class RestServer(ThreadingHTTPServer):
    """Threads per connection; a client leaving early is one log line, not a traceback."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            log.info("rest: client %s hung up", client_address[0])
        else:
            log.exception("rest: error on a connection from %s", client_address[0])


def start_rest_server(core, address, port):
    """Serves the REST API on ``address:port`` in a thread, with ``core.limits``."""
    handler = type(
        "BoundRestHandler",
        (RestHandler,),
        {"core": core, "timeout": core.limits.rest_read_timeout_seconds},
    )
    try:
        server = RestServer((address, port), handler)
    except OSError as error:
        raise ValueError(
            f"--rest_api_port={port}: cannot bind {address}:{port} ({error})"
        ) from None
    threading.Thread(target=server.serve_forever, name="rest", daemon=True).start()
    return server
