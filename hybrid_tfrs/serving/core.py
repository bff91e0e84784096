"""The transport-neutral server: resolves model, version, signature; admits and runs predictions."""

import threading

from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from hybrid_tfrs.serving import ServingError, clip


class Admission:
    """A bounded queue in front of the predictions.

    At most ``max_running`` predictions run at once; up to ``max_queued`` more
    wait for a slot, each at most ``timeout_s`` (then DEADLINE_EXCEEDED). One
    more is refused at once with RESOURCE_EXHAUSTED, so the queue never grows.
    """

    def __init__(self, max_running, max_queued, timeout_s):
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_running)
        self._lock = threading.Lock()
        self._waiting = 0

    def __enter__(self):
        if self._slots.acquire(blocking=False):
            return self
        with self._lock:
            if self._waiting >= self.max_queued:
                raise ServingError(
                    "RESOURCE_EXHAUSTED",
                    f"server busy: {self._waiting} requests already queued "
                    "(--max_queued_requests); retry later",
                )
            self._waiting += 1
        try:
            acquired = self._slots.acquire(timeout=self.timeout_s)
        finally:
            with self._lock:
                self._waiting -= 1
        if not acquired:
            raise ServingError(
                "DEADLINE_EXCEEDED",
                f"no free slot within {self.timeout_s:g}s (--request_timeout_seconds)",
            )
        return self

    def __exit__(self, *exc):
        self._slots.release()


class ModelServer:
    """Resolves model / version / signature and runs predictions (transport-neutral)."""

    def __init__(self, managers, limits, batcher=None):
        self.managers = {manager.name: manager for manager in managers}
        self.limits = limits
        self.batcher = batcher
        self.admission = Admission(
            limits.max_concurrent_requests,
            limits.max_queued_requests,
            limits.request_timeout_seconds,
        )

    def manager(self, name):
        if name not in self.managers:
            raise ServingError(
                "NOT_FOUND",
                f"servable not found for request: Latest({clip(name)}): unknown model "
                f"(served: {sorted(self.managers)})",
            )
        return self.managers[name]

    def servable(self, name, version=None, label=None):
        """The loaded version a request names (NOT_FOUND if none)."""
        return self.manager(name).servable(version, label)

    def predict(self, servable, signature_name, inputs, output_filter=()):
        """Runs a signature of a resolved version -> (signature name, outputs)."""
        signature = servable.signature(signature_name)
        signature.check(inputs, self.limits.max_rows_per_request)
        if output_filter:
            outputs = servable.signature_defs[signature.name].outputs
            unknown = sorted(clip(alias, 50) for alias in set(output_filter) - set(outputs))
            if unknown:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"output_filter: {unknown[:10]} not outputs of signature {signature.name!r}",
                )
        with self.admission:
            if self.batcher is not None:
                outputs = self.batcher.run(signature, inputs)
            else:
                outputs = signature.run(inputs)
        if output_filter:
            outputs = {alias: outputs[alias] for alias in output_filter}
        return signature.name, outputs

    def signature_def_map(self, servable):
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        return signature_map

    def status_response(self, name, version=None):
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state, code, message in self.manager(name).status(version):
            entry = response.model_version_status.add(version=v)
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            entry.status.error_code = error_codes_pb2.Code.Value(code)
            entry.status.error_message = message
        return response
