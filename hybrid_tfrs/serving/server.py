"""A local stand-in for ``tensorflow_model_server`` (the subset this model uses).

    hybrid-tfrs-serve --port=8500 --rest_api_port=8501 \
        --model_name=hybrid --model_base_path=$PWD/exported/hybrid
    python -m hybrid_tfrs.serving.server --port=8500 --rest_api_port=8501 \
        --model_config_file=serving/models.config --enable_batching

TensorFlow Serving's binary is neither on PyPI nor in Debian, so this server
implements, over the same export folder and with the same flags, the parts of
its API the client uses. Where to look:

- ``versions``: model config file, version policy, loading, swapping, status;
- ``limits``: every size, time and queue limit, with its flag and default;
- ``grpc_service`` / ``rest``: the two front ends and their request checks;
- ``batching``: merging concurrent requests; ``core``: the bounded queue and
  the transport-neutral predict; ``hybrid_tfrs.serving``: the status codes.
"""

import logging
import os
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from hybrid_tfrs.serving import limits as limits_lib  # noqa: E402

log = logging.getLogger("hybrid_tfrs.serving")
FLAGS = flags.FLAGS


def define_flags():
    """tensorflow_model_server's flags, this stand-in's own, and the limits."""
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
    flags.DEFINE_string(
        "bind_address",
        "127.0.0.1",
        "Address both servers bind (this stand-in's own flag; TF Serving binds all: 0.0.0.0).",
    )
    limits_lib.define_flags()


def main(argv):
    del argv  # run_command refuses positional arguments
    from hybrid_tfrs.cli.common import quiet_tensorflow

    quiet_tensorflow()
    log.setLevel(logging.INFO)  # loads, unloads, failures and hang-ups: one line each
    from hybrid_tfrs.serving.batching import Batcher
    from hybrid_tfrs.serving.core import ModelServer
    from hybrid_tfrs.serving.grpc_service import start_grpc_server
    from hybrid_tfrs.serving.rest import start_rest_server
    from hybrid_tfrs.serving.versions import VersionManager, model_configs, poll_forever

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        limits = limits_lib.Limits.from_flags(FLAGS)
        managers = [
            VersionManager(config, limits.max_rows_per_request, FLAGS.enable_model_warmup)
            for config in model_configs(
                FLAGS.model_config_file, FLAGS.model_name, FLAGS.model_base_path
            )
        ]
        if FLAGS.file_system_poll_wait_seconds >= 0:
            for manager in managers:
                manager.poll()
        batcher = (
            Batcher(
                FLAGS.max_batch_size,
                FLAGS.batch_timeout_micros / 1e6,
                limits.request_timeout_seconds,
            )
            if FLAGS.enable_batching
            else None
        )
        core = ModelServer(managers, limits, batcher)
        grpc_server = start_grpc_server(core, FLAGS.bind_address, FLAGS.port)
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
            target=poll_forever,
            args=(managers, FLAGS.file_system_poll_wait_seconds, stop),
            name="poll",
            daemon=True,
        ).start()
    rest = FLAGS.rest_api_port if rest_server else "0 (off)"
    for manager in managers:
        version = max(manager.versions) if manager.versions else "none yet"
        print(
            f"serving {manager.name} version {version} on grpc port {FLAGS.port}, rest port {rest}",
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


def run(argv=None):
    """Console-script entry point ``hybrid-tfrs-serve`` (``--help`` exits 0)."""
    from hybrid_tfrs.cli.common import run_command

    define_flags()
    run_command(main, sys.modules[__name__], argv)


if __name__ == "__main__":
    run()
