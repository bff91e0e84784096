"""The batcher: merges concurrent requests for one signature into one call."""

import concurrent.futures
import logging
import queue
import threading
import time

import numpy as np

from hybrid_tfrs.serving import ServingError

log = logging.getLogger("hybrid_tfrs.serving")


class _Task:
    def __init__(self, signature, inputs, key, rows):
        self.signature = signature
        self.inputs = inputs
        self.key = key
        self.rows = rows
        self.future = concurrent.futures.Future()


def stack_rows(arrays):
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
    by one so that one bad request fails alone. A caller waits at most
    ``request_timeout_s`` for its result (then DEADLINE_EXCEEDED); an
    unexpected error fails the requests of its batch, never the thread.
    """

    def __init__(self, max_batch_size, timeout_s, request_timeout_s=30.0):
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s
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
        try:
            return task.future.result(timeout=self.request_timeout_s)
        except concurrent.futures.TimeoutError:
            task.future.cancel()
            raise ServingError(
                "DEADLINE_EXCEEDED",
                f"no result within {self.request_timeout_s:g}s (--request_timeout_seconds)",
            ) from None

    def stop(self):
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _loop(self):
        while True:
            tasks = self._collect()
            if tasks is None:
                return
            try:
                groups = {}
                for task in tasks:
                    groups.setdefault(task.key, []).append(task)
                for group in groups.values():
                    self._run_group(group)
            except Exception as error:  # noqa: BLE001 (the thread must keep serving)
                log.exception("batching failed")
                for task in tasks:
                    if not task.future.done():
                        task.future.set_exception(error)

    def _collect(self):
        """The tasks of the next batch window (None once stopped); cancelled ones dropped."""
        first = self._queue.get()
        if first is None:
            return None
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
        return [task for task in tasks if task.future.set_running_or_notify_cancel()]

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
            alias: stack_rows([t.inputs[alias] for t in tasks])
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
