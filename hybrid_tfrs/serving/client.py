"""Client of TensorFlow Serving (or the local stand-in) for the exported recommender.

    hybrid-tfrs-client --target localhost:8500 --model hybrid --history i12 i55 i303
    hybrid-tfrs-client --rest http://localhost:8501 --model hybrid --history i12 i55 --k=5
    python -m hybrid_tfrs.serving.client --target localhost:8500 --model hybrid \
        --history i12 i55 --history i7 i8 i9 --signature=serving_default --version=3

The same Python API over both transports::

    with GrpcClient("localhost:8500", "hybrid") as client:  # or RestClient(url, "hybrid")
        result = client.recommend([["i12", "i55", "i303"]], k=10)
        result.item_ids[0], result.scores[0], result.version

Errors (unknown model or version, bad input, server down) raise
``hybrid_tfrs.serving.ServingError`` with the canonical status code name and the
server's message. Flag parsing and REST import neither TensorFlow nor gRPC;
gRPC (whose TF Serving protos import TensorFlow) is imported when first used.
"""

import argparse
import base64
import dataclasses
import json
import numbers
import sys
import types

import numpy as np
import requests
from requests.adapters import HTTPAdapter, Retry

from hybrid_tfrs.serving import HTTP_STATUS, ServingError, code_from_http_status

MAX_K = 2**31 - 1  # the recommend signature's k is an int32

__all__ = ["GrpcClient", "Recommendations", "RestClient", "ServingError", "history_array"]


@dataclasses.dataclass
class Recommendations:
    """Top items per history, best first.

    Attributes:
        item_ids: [B][k] raw item ids (str).
        scores: float32 [B, k].
        version: the model version that answered (gRPC), or None (REST does not say).
        known_items: [B] ids of each history found in the model's vocabulary (the
            others were dropped), or None from an export without that output.
    """

    item_ids: list
    scores: np.ndarray
    version: int | None
    known_items: list | None = None


def history_array(histories):
    """Raw-id histories (lists of str, bytes or int ids, any lengths) -> object array [B, T]
    of bytes, "" padded. ValueError for any other id (a float 123.0 would become "123.0",
    an id the vocabulary does not have, and be dropped by the model)."""
    if isinstance(histories, str | bytes) or not all(
        isinstance(h, list | tuple) for h in histories
    ):
        raise ValueError("histories must be a list of lists of raw item ids")
    width = max((len(h) for h in histories), default=0)
    array = np.full((len(histories), width), b"", dtype=object)
    for row, history in enumerate(histories):
        for col, raw in enumerate(history):
            if isinstance(raw, bool) or not isinstance(raw, str | bytes | numbers.Integral):
                raise ValueError(
                    f"history {row}, position {col}: item ids are str, bytes or int, "
                    f"got {type(raw).__name__} {raw!r}"
                )
            array[row, col] = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
    return array


def history_examples(histories):
    """Raw-id histories -> object array [B] of serialized tf.Example (feature ``history``)."""
    return _examples(history_array(histories))


def _examples(histories):
    """:func:`history_array`'s [B, T] bytes -> object array [B] of serialized tf.Example."""
    from tensorflow.core.example import example_pb2  # imports TensorFlow: only when asked

    serialized = np.empty(len(histories), dtype=object)
    for row, history in enumerate(histories):
        example = example_pb2.Example()
        example.features.feature["history"].bytes_list.value.extend(v for v in history if v)
        serialized[row] = example.SerializeToString()
    return serialized


def _signatures(signature_def_map):
    """SignatureDefMap as JSON -> {name: {"inputs"|"outputs": {alias: {"dtype", "shape"}}}}."""

    def tensors(infos):
        return {
            alias: {
                "dtype": info.get("dtype", "DT_INVALID"),
                "shape": None
                if info.get("tensor_shape", {}).get("unknown_rank")
                else [int(d.get("size", -1)) for d in info.get("tensor_shape", {}).get("dim", [])],
            }
            for alias, info in infos.items()
        }

    return {
        name: {"inputs": tensors(sig.get("inputs", {})), "outputs": tensors(sig.get("outputs", {}))}
        for name, sig in signature_def_map.get("signature_def", {}).items()
        if not name.startswith("__")  # __saved_model_init_op
    }


def _status_rows(status_json):
    return [
        {
            "version": int(row["version"]),
            "state": row["state"],
            "error_code": row.get("status", {}).get("error_code", "OK"),
            "error_message": row.get("status", {}).get("error_message", ""),
        }
        for row in status_json.get("model_version_status", [])
    ]


# Codes a busy or restarting server answers, worth another try (the request is a read).
RETRIED_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
RETRY_BACKOFF_S = 0.1  # the first wait; it doubles each try, at most 2 s


class _Client:
    """The transport-neutral API; subclasses implement ``_predict``, ``_metadata``, ``_status``.

    ``retries``: further tries, with exponential backoff, of a call answered
    UNAVAILABLE or RESOURCE_EXHAUSTED (HTTP 503 or 429) or refused a connection;
    each try has the whole ``timeout``.
    """

    def __init__(self, model, timeout, retries=2):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self._recommend_inputs = {}  # requested version -> input aliases of "recommend"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass

    def predict(self, inputs, signature="serving_default", version=None, output_aliases=None):
        """Runs a signature: {alias: array} -> {alias: numpy array} (strings as bytes).

        ``output_aliases`` names the outputs; over REST it names a single output
        (TF Serving returns that one unnamed; without it the key is "outputs").
        """
        outputs, _ = self._predict(inputs, signature, version, output_aliases)
        return outputs

    def recommend(
        self, histories, k=10, signature="recommend", version=None, exclude_history=False
    ):
        """Top-k raw item ids for raw-id histories (oldest first).

        ``signature="serving_default"`` sends tf.Examples; its number of items
        was fixed at export, and the first ``k`` of them are kept.
        ``exclude_history`` (``recommend`` only) leaves each history's items out;
        it is sent when the served signature has that input (learned from the
        model's metadata), and asking for it from a model without it raises
        ValueError.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= MAX_K:
            raise ValueError(f"k={k!r}: must be a whole number from 1 to {MAX_K}")
        if signature not in ("recommend", "serving_default"):
            raise ValueError(f"signature must be recommend or serving_default, got {signature!r}")
        if exclude_history and signature != "recommend":
            raise ValueError("exclude_history needs the recommend signature")
        history = history_array(histories)  # ValueError naming a bad id
        if not len(history):  # REST's JSON cannot carry a [0, T] batch: nothing to ask
            return Recommendations([], np.zeros((0, k), np.float32), None, [])
        if signature == "recommend":
            inputs = {"history": history, "k": np.int32(k)}
            try:
                outputs, answered = self._recommend(inputs, version, exclude_history)
            except ServingError as error:  # the served version changed its inputs: ask again
                if error.code != "INVALID_ARGUMENT" or "exclude_history" not in error.message:
                    raise
                self._recommend_inputs.pop(version, None)
                outputs, answered = self._recommend(inputs, version, exclude_history)
        else:
            inputs = {"examples": _examples(history)}
            outputs, answered = self._predict(inputs, signature, version, ("item_ids", "scores"))
        item_ids = [[raw.decode("utf-8") for raw in row[:k]] for row in outputs["item_ids"]]
        scores = np.asarray(outputs["scores"], np.float32)[:, :k]
        known = outputs.get("known_items")
        known = None if known is None else [int(n) for n in np.asarray(known).reshape(-1)]
        return Recommendations(item_ids, scores, answered, known)

    def _recommend(self, inputs, version, exclude_history):
        if version not in self._recommend_inputs:
            signatures = self.metadata(version)["signatures"]
            self._recommend_inputs[version] = set(signatures.get("recommend", {}).get("inputs", {}))
        if "exclude_history" in self._recommend_inputs[version]:
            inputs = dict(inputs, exclude_history=np.bool_(exclude_history))
        elif exclude_history:
            raise ValueError(
                f"model {self.model!r} (version {version or 'newest'}): its recommend signature "
                "has no exclude_history input; export it with a hybrid_tfrs that has one"
            )
        return self._predict(inputs, "recommend", version, ("item_ids", "scores"))

    def query_embedding(self, histories, version=None):
        """Query vectors for raw-id histories: float32 [B, d]."""
        outputs, _ = self._predict(
            {"history": history_array(histories)}, "query_embedding", version, ("embedding",)
        )
        return np.asarray(outputs["embedding"], np.float32)

    def item_embeddings(self, version=None):
        """(raw item ids [N] list of str, float32 [N, d]) of the whole catalogue."""
        outputs, _ = self._predict({}, "item_embeddings", version, ("item_ids", "embeddings"))
        ids = [raw.decode("utf-8") for raw in outputs["item_ids"]]
        return ids, np.asarray(outputs["embeddings"], np.float32)

    def metadata(self, version=None):
        """{"version": int, "signatures": {name: {"inputs"|"outputs": {alias: {dtype, shape}}}}}."""
        answered, signature_def_map = self._metadata(version)
        return {"version": answered, "signatures": _signatures(signature_def_map)}

    def status(self, version=None):
        """[{"version", "state", "error_code", "error_message"}] per version the server knows."""
        return self._status(version)


def _grpc_modules():
    """grpc, TensorFlow and TF Serving's protos: imported on first gRPC use (they are heavy)."""
    import grpc
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    return types.SimpleNamespace(
        grpc=grpc,
        tf=tf,
        json_format=json_format,
        get_model_metadata_pb2=get_model_metadata_pb2,
        get_model_status_pb2=get_model_status_pb2,
        model_service_pb2_grpc=model_service_pb2_grpc,
        predict_pb2=predict_pb2,
        prediction_service_pb2_grpc=prediction_service_pb2_grpc,
    )


def _retry_config(retries):
    """gRPC service config: retry both TF Serving services on RETRIED_CODES."""
    services = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")
    policy = {
        "maxAttempts": min(retries + 1, 5),
        "initialBackoff": f"{RETRY_BACKOFF_S}s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": list(RETRIED_CODES),
    }
    names = [{"service": service} for service in services]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


class GrpcClient(_Client):
    """TensorFlow Serving's gRPC API (PredictionService, ModelService) at ``target``."""

    def __init__(self, target, model, timeout=30.0, retries=2):
        super().__init__(model, timeout, retries)
        self.target = target
        self._m = _grpc_modules()
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        if retries:  # gRPC's own retry policy (a service config), at most 5 attempts
            options += [("grpc.enable_retries", 1), ("grpc.service_config", _retry_config(retries))]
        self.channel = self._m.grpc.insecure_channel(target, options=options)
        self.predictions = self._m.prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = self._m.model_service_pb2_grpc.ModelServiceStub(self.channel)

    def _to_dict(self, message):
        return self._m.json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    def close(self):
        self.channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except self._m.grpc.RpcError as error:
            raise ServingError(error.code().name, error.details()) from None

    def _spec(self, spec, version, signature=None):
        spec.name = self.model
        if version is not None:
            spec.version.value = int(version)
        if signature is not None:
            spec.signature_name = signature

    def _predict(self, inputs, signature, version, output_aliases):
        tf = self._m.tf
        request = self._m.predict_pb2.PredictRequest()
        self._spec(request.model_spec, version, signature)
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self.predictions.Predict, request)
        outputs = {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
        return outputs, response.model_spec.version.value

    def _metadata(self, version):
        metadata_pb2 = self._m.get_model_metadata_pb2
        request = metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version)
        response = self._call(self.predictions.GetModelMetadata, request)
        signature_def_map = metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_def_map)
        return response.model_spec.version.value, self._to_dict(signature_def_map)

    def _status(self, version):
        request = self._m.get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, version)
        return _status_rows(self._to_dict(self._call(self.models.GetModelStatus, request)))


def _to_json(array):
    """Numpy input -> JSON value; bytes as text, or {"b64": ...} if not UTF-8."""
    array = np.asarray(array)
    if array.dtype.kind != "O":
        return array.tolist()

    def convert(value):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}

    return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else array.tolist()


def _from_json(value):
    """JSON output -> numpy array; strings (and {"b64": ...}) become bytes."""

    def convert(item):
        if isinstance(item, list):
            return [convert(x) for x in item]
        if isinstance(item, dict) and "b64" in item:
            return base64.b64decode(item["b64"])
        return item.encode("utf-8") if isinstance(item, str) else item

    converted = convert(value)
    leaf = converted
    while isinstance(leaf, list) and leaf:
        leaf = leaf[0]
    return np.array(converted, dtype=object if isinstance(leaf, bytes) else None)


class RestClient(_Client):
    """TensorFlow Serving's REST API at ``url`` (e.g. ``http://localhost:8501``)."""

    def __init__(self, url, model, timeout=30.0, retries=2):
        super().__init__(model, timeout, retries)
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if retries:  # urllib3's retry: connection refused, 503 and 429, Retry-After honoured
            retry = Retry(
                total=retries,
                read=0,  # a request the server may be working on is not sent twice
                status_forcelist=[HTTP_STATUS[code] for code in RETRIED_CODES],
                allowed_methods=None,  # POST :predict is a read too
                backoff_factor=RETRY_BACKOFF_S,
                backoff_max=2.0,
                raise_on_status=False,  # the last answer's error is reported as any other
            )
            self.session.mount(self.url, HTTPAdapter(max_retries=retry))

    def close(self):
        self.session.close()

    def _path(self, version):
        return f"/v1/models/{self.model}" + (
            f"/versions/{int(version)}" if version is not None else ""
        )

    def _request(self, method, path, body=None):
        try:
            response = self.session.request(
                method, self.url + path, json=body, timeout=self.timeout
            )
        except requests.RequestException as error:
            raise ServingError("UNAVAILABLE", f"{self.url}: {error}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text.strip()[:200]}
        if response.status_code != 200:
            message = payload.get("error", "") if isinstance(payload, dict) else str(payload)
            raise ServingError(
                code_from_http_status(response.status_code), message, response.status_code
            )
        return payload

    def _predict(self, inputs, signature, version, output_aliases):
        body = {
            "signature_name": signature,
            "inputs": {alias: _to_json(value) for alias, value in inputs.items()},
        }
        outputs = self._request("POST", self._path(version) + ":predict", body)["outputs"]
        if not isinstance(outputs, dict) or "b64" in outputs:  # a single output comes unnamed
            name = output_aliases[0] if output_aliases and len(output_aliases) == 1 else "outputs"
            outputs = {name: outputs}
        return {alias: _from_json(value) for alias, value in outputs.items()}, None

    def _metadata(self, version):
        payload = self._request("GET", self._path(version) + "/metadata")
        return int(payload["model_spec"]["version"]), payload["metadata"]["signature_def"]

    def _status(self, version):
        return _status_rows(self._request("GET", self._path(version)))


def _table(history, result, row):
    lines = [f"history: {' '.join(history)}"]
    given = sum(1 for raw in history if raw)
    if result.known_items is not None and result.known_items[row] < given:
        lines.append(
            f"note: {given - result.known_items[row]} of these {given} ids are not in the "
            "model's vocabulary and were ignored"
        )
    lines.append(f"{'rank':>4}  {'item':<20} score")
    for rank, (item, score) in enumerate(zip(result.item_ids[row], result.scores[row]), start=1):
        lines.append(f"{rank:>4}  {item:<20} {score:.4f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="hybrid-tfrs-client",
        description="Recommendations from a TensorFlow Serving model (gRPC or REST).",
    )
    parser.add_argument("--target", default="localhost:8500", help="gRPC host:port.")
    parser.add_argument("--rest", help="REST base URL (e.g. http://localhost:8501): use REST.")
    parser.add_argument("--model", required=True, help="Model name.")
    parser.add_argument(
        "--history",
        nargs="+",
        action="append",
        required=True,
        metavar="ITEM",
        help="Raw item ids, oldest first; repeat --history for several users.",
    )
    parser.add_argument("--k", type=int, default=10, help="Number of items (from 1).")
    parser.add_argument(
        "--signature", default="recommend", choices=("recommend", "serving_default")
    )
    parser.add_argument("--version", type=int, help="Model version (default: the newest).")
    parser.add_argument("--timeout", type=float, default=30.0, help="Seconds per call.")
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="Further tries of a call the server answers UNAVAILABLE or RESOURCE_EXHAUSTED "
        "(busy, restarting), with exponential backoff from 0.1 s; 0: none.",
    )
    parser.add_argument(
        "--exclude_history",
        action="store_true",
        help="Leave each history's items out of its recommendations (signature recommend; "
        "the model must have been exported with that input).",
    )
    args = parser.parse_args(argv)

    if args.retries < 0:
        parser.error(f"--retries={args.retries}: must be >= 0")
    if not 1 <= args.k <= MAX_K:
        parser.error(f"--k={args.k}: must be from 1 to {MAX_K}")
    if args.rest:
        client = RestClient(args.rest, args.model, args.timeout, args.retries)
        where = f"rest {args.rest}"
    else:
        from hybrid_tfrs.tensorflow_logs import quiet_tensorflow

        quiet_tensorflow()  # the gRPC protos import it: no C++ log lines
        client = GrpcClient(args.target, args.model, args.timeout, args.retries)
        where = f"grpc {args.target}"
    try:
        with client:
            result = client.recommend(
                args.history, args.k, args.signature, args.version, args.exclude_history
            )
    except ServingError as error:
        print(f"error: {error.code}: {' '.join(error.message.split())}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    version = result.version or args.version or "newest"
    print(f"model {args.model} version {version} via {where}, signature {args.signature}")
    for row, history in enumerate(args.history):
        print()
        print(_table(history, result, row))
    return 0


def run():
    """Console-script entry point ``hybrid-tfrs-client``."""
    sys.exit(main())


if __name__ == "__main__":
    run()
