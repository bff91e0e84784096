"""Latency and throughput of the exported model behind the local server.

Exports an (untrained) model of realistic size, starts one ``hybrid_tfrs.serving.server``
subprocess per ``--batching`` setting on free loopback ports, and for every
(transport, histories per request, concurrent clients) configuration, on each
server in turn (so that drifting machine load hits both alike), runs closed-loop
clients (each sends its next request when the previous answer arrives) for
``--seconds`` or ``--max_requests``, after ``--warmup_requests`` untimed
requests per client. Reports latency p50/p99 (client-side, serialization
included), requests/s and histories/s. Clients run as threads of this
process, so they share the machine with the server.

With ``--soak_seconds`` it runs a soak test instead: ``--soak_clients``
closed-loop clients (alternately gRPC and REST, 1, 8 or 32 histories a request)
against one server for that long, and reports errors, latency p50/p99 and the
server's resident memory before and after into ``--soak_output``.

Usage (from the repository root):
    python benchmarks/serving.py                                   # the full grid
    python benchmarks/serving.py --transports=grpc --concurrency=1,16 --seconds=3
    python benchmarks/serving.py --soak_seconds=60 --soak_clients=16 --batching=on
"""

import collections
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("model", "hybrid", "Encoder kind.")
flags.DEFINE_integer("num_items", 12101, "Catalogue size N.", lower_bound=1)
flags.DEFINE_integer("max_len", 50, "Latest items the model reads.", lower_bound=1)
flags.DEFINE_integer("hidden_dim", 64, "Hidden size.", lower_bound=1)
flags.DEFINE_integer("k", 10, "Items per recommendation.", lower_bound=1)
flags.DEFINE_list("history_lengths", ["5", "200"], "History lengths: log-uniform in [min, max].")
flags.DEFINE_list("transports", ["grpc", "rest"], "grpc and/or rest.")
flags.DEFINE_list("histories_per_request", ["1", "32"], "Histories per request.")
flags.DEFINE_list("concurrency", ["1", "4", "16"], "Concurrent clients.")
flags.DEFINE_list("batching", ["on", "off"], "Server --enable_batching settings to run.")
flags.DEFINE_float("seconds", 5.0, "Timed seconds per configuration.", lower_bound=0.1)
flags.DEFINE_integer("max_requests", 3000, "Timed requests per configuration, at most.")
flags.DEFINE_integer("warmup_requests", 3, "Untimed requests per client first.", lower_bound=0)
flags.DEFINE_string(
    "output", os.path.join(REPO_ROOT, "benchmarks", "results", "serving.md"), "Markdown results."
)
flags.DEFINE_string("note", "", "A line on the machine's other load, written into the results.")
flags.DEFINE_float("soak_seconds", 0.0, "If > 0: a soak run of this many seconds, not the grid.")
flags.DEFINE_integer("soak_clients", 16, "Soak: concurrent clients.", lower_bound=1)
flags.DEFINE_string(
    "soak_output",
    os.path.join(REPO_ROOT, "benchmarks", "results", "serving_soak.md"),
    "Soak: markdown results.",
)


def machine_description():
    """CPU model, usable cores and RAM."""
    cpu, memory = platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        memory = f", {kib / 2**20:.1f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores{memory}"


def make_histories(raw_ids, count, lengths, seed=0):
    """``count`` histories of raw ids, lengths log-uniform in ``lengths``, Zipf-like items."""
    rng = np.random.default_rng(seed)
    low, high = np.log(lengths[0]), np.log(lengths[1] + 1)
    sizes = np.exp(rng.uniform(low, high, size=count)).astype(int)
    popularity = 1.0 / np.arange(1, len(raw_ids) + 1)
    popularity /= popularity.sum()
    return [list(rng.choice(raw_ids, size=n, p=popularity)) for n in sizes]


def export_model(export_dir):
    """Exports an untrained model of the configured size: (raw item ids, base path)."""
    import keras

    from hybrid_tfrs import SequentialRetrievalModel, build_encoder
    from hybrid_tfrs.data import Vocabulary
    from hybrid_tfrs.export import export_saved_model

    keras.utils.set_random_seed(0)
    encoder = build_encoder(
        FLAGS.model, num_items=FLAGS.num_items, max_len=FLAGS.max_len, hidden_dim=FLAGS.hidden_dim
    )
    model = SequentialRetrievalModel(encoder)
    rng = np.random.default_rng(0)
    model.set_item_popularity(rng.zipf(1.5, FLAGS.num_items + 1).clip(max=10_000))
    vocabulary = Vocabulary([f"item{i}" for i in range(1, FLAGS.num_items + 1)])
    export_saved_model(model, vocabulary, export_dir, FLAGS.model, version=1)
    return vocabulary.ids, os.path.join(export_dir, FLAGS.model)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``hybrid_tfrs.serving.server`` in a subprocess on free loopback ports."""

    def __init__(self, base_path, batching, log_path):
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            "hybrid_tfrs.serving.server",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            f"--model_name={FLAGS.model}",
            f"--model_base_path={base_path}",
            f"--enable_batching={'true' if batching else 'false'}",
            "--bind_address=127.0.0.1",
        ]
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True
            )
        ready = self.process.stdout.readline()
        if not ready.startswith("serving "):
            self.stop()
            with open(log_path) as f:
                raise RuntimeError(f"server did not start:\n{f.read()[-3000:]}")

    def client(self, transport):
        from hybrid_tfrs.serving.client import GrpcClient, RestClient

        if transport == "grpc":
            return GrpcClient(f"127.0.0.1:{self.grpc_port}", FLAGS.model, timeout=120)
        return RestClient(f"http://127.0.0.1:{self.rest_port}", FLAGS.model, timeout=120)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def measure(server, transport, per_request, clients, histories):
    """Closed-loop run: latencies of the timed requests and the wall time they took."""
    latencies, errors, lock = [], [], threading.Lock()
    window = {}  # start and stop times, set once every client is warm

    def open_window():
        window["start"] = time.perf_counter()
        window["stop"] = window["start"] + FLAGS.seconds

    start_barrier = threading.Barrier(clients, action=open_window)

    def client_loop(index):
        rng = np.random.default_rng(index)
        with server.client(transport) as client:

            def request():
                rows = rng.integers(0, len(histories), size=per_request)
                client.recommend([histories[i] for i in rows], k=FLAGS.k)

            try:
                for _ in range(FLAGS.warmup_requests):
                    request()
            except Exception as error:  # noqa: BLE001 (reported below)
                errors.append(error)
            start_barrier.wait()
            while not errors:
                began = time.perf_counter()
                if began >= window["stop"]:
                    return
                try:
                    request()
                except Exception as error:  # noqa: BLE001 (reported below)
                    errors.append(error)
                    return
                with lock:
                    if len(latencies) >= FLAGS.max_requests:
                        return
                    latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - window["start"]
    if errors:
        raise RuntimeError(f"{transport}, {per_request}x{clients}: {errors[0]}")
    return np.array(latencies), wall


def run_grid(servers, histories):
    """Every configuration on each server in turn (so drifting load hits both alike)."""
    rows = []
    for transport in FLAGS.transports:
        for per_request in (int(n) for n in FLAGS.histories_per_request):
            for clients in (int(n) for n in FLAGS.concurrency):
                for batching, server in servers.items():
                    latencies, wall = measure(server, transport, per_request, clients, histories)
                    row = {
                        "batching": batching,
                        "transport": transport,
                        "per_request": per_request,
                        "clients": clients,
                        "requests": len(latencies),
                        "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
                        "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
                        "requests_per_s": len(latencies) / wall,
                        "histories_per_s": len(latencies) * per_request / wall,
                        "load_1min": os.getloadavg()[0],
                    }
                    rows.append(row)
                    print(
                        f"batching {batching:<3} {transport:<4} {per_request:>2} histories x "
                        f"{clients:>2} clients: p50 {row['p50_ms']:7.1f} ms, p99 "
                        f"{row['p99_ms']:7.1f} ms, {row['requests_per_s']:7.1f} req/s, "
                        f"{row['histories_per_s']:8.1f} histories/s ({row['requests']} requests, "
                        f"load {row['load_1min']:.1f})",
                        flush=True,
                    )
    return rows


def write_markdown(rows, path, context):
    lines = [
        "# Serving latency and throughput",
        "",
        f"Produced by `{shlex.join(['python', 'benchmarks/serving.py'] + context['argv'])}` "
        "(see its docstring).",
        "",
        f"- Machine: {context['machine']}; TensorFlow {context['tf_version']}.",
        f"- Load average (1, 5, 15 min) before: {context['load_before']}, "
        f"after: {context['load_after']}.",
    ]
    if context["note"]:
        lines.append(f"- {context['note']}")
    lines += [
        f"- Model: untrained `{FLAGS.model}`, {FLAGS.num_items} items, max_len {FLAGS.max_len}, "
        f"hidden {FLAGS.hidden_dim}; signature `recommend`, k = {FLAGS.k}.",
        f"- Histories: raw ids, lengths log-uniform in [{FLAGS.history_lengths[0]}, "
        f"{FLAGS.history_lengths[1]}] (median {context['median_length']:.0f}; the model keeps "
        f"the latest {FLAGS.max_len}), Zipf-like item choice.",
        "- Server: `hybrid_tfrs.serving.server` (the local stand-in for TF Serving) with "
        "default flags "
        "(batching: max 128 histories, 1 ms window). Clients: closed-loop threads of the "
        "benchmark process, on the same machine; latency is measured at the client and "
        "includes serialization.",
        f"- Each row: {FLAGS.warmup_requests} untimed requests per client, then "
        f"{FLAGS.seconds:g} s or {FLAGS.max_requests} requests, whichever comes first.",
        "",
        "- The last column is the machine's 1-minute load average when the row finished "
        "(2 cores: above 2, the server, the clients and other jobs were queueing for CPU).",
        "",
        "| batching | transport | histories / request | clients | requests | p50 ms | p99 ms "
        "| requests/s | histories/s | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batching']} | {row['transport']} | {row['per_request']} | {row['clients']} "
            f"| {row['requests']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {row['requests_per_s']:.1f} | {row['histories_per_s']:.1f} "
            f"| {row['load_1min']:.1f} |"
        )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def resident_mib(pid):
    """Resident memory (VmRSS) of a process, MiB."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def soak(server, histories):
    """``--soak_clients`` closed-loop clients for ``--soak_seconds``: latencies, errors, memory."""
    latencies, errors, lock = [], collections.Counter(), threading.Lock()
    first_errors, rss = [], {"after_start": resident_mib(server.process.pid)}
    window = {}

    def open_window():
        rss["before"] = resident_mib(server.process.pid)
        window["start"] = time.perf_counter()
        window["stop"] = window["start"] + FLAGS.soak_seconds

    start_barrier = threading.Barrier(FLAGS.soak_clients, action=open_window)

    def client_loop(index):
        rng = np.random.default_rng(index)
        with server.client(("grpc", "rest")[index % 2]) as client:

            def request():
                rows = rng.integers(0, len(histories), size=rng.choice([1, 8, 32]))
                client.recommend([histories[i] for i in rows], k=FLAGS.k)

            for _ in range(FLAGS.warmup_requests):
                request()
            start_barrier.wait()
            while time.perf_counter() < window["stop"]:
                began = time.perf_counter()
                try:
                    request()
                except Exception as error:  # noqa: BLE001 (counted and reported)
                    with lock:
                        errors[getattr(error, "code", type(error).__name__)] += 1
                        first_errors.append(str(error)[:200])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(FLAGS.soak_clients)]
    for thread in threads:
        thread.start()
    samples = []
    while any(thread.is_alive() for thread in threads):
        samples.append(resident_mib(server.process.pid))
        time.sleep(1.0)
    for thread in threads:
        thread.join()
    rss["after"], rss["max"] = resident_mib(server.process.pid), max(samples)
    wall = time.perf_counter() - window["start"]
    return np.array(latencies), wall, errors, first_errors[:5], rss


def write_soak_markdown(result, path, context):
    latencies, wall, errors, first_errors, rss = result
    growth = 100 * (rss["after"] - rss["before"]) / rss["before"]
    lines = [
        "# Serving soak",
        "",
        f"Produced by `{shlex.join(['python', 'benchmarks/serving.py'] + context['argv'])}` "
        "(see its docstring).",
        "",
        f"- Machine: {context['machine']}; TensorFlow {context['tf_version']}.",
        f"- Load average (1, 5, 15 min) before: {context['load_before']}, "
        f"after: {context['load_after']}.",
        f"- Model: untrained `{FLAGS.model}`, {FLAGS.num_items} items, max_len {FLAGS.max_len}, "
        f"hidden {FLAGS.hidden_dim}; signature `recommend`, k = {FLAGS.k}; histories of "
        f"{FLAGS.history_lengths[0]} to {FLAGS.history_lengths[1]} raw ids.",
        f"- Server: `hybrid_tfrs.serving.server`, default limits, batching "
        f"{context['batching']}. Clients: {FLAGS.soak_clients} closed-loop threads of the "
        "benchmark process (alternately gRPC and REST; 1, 8 or 32 histories a request), "
        f"{FLAGS.warmup_requests} untimed requests each, then {FLAGS.soak_seconds:g} s.",
        "",
        "| requests | errors | p50 ms | p99 ms | requests/s | server RSS MiB: after start "
        "| before | after | max | growth |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(latencies)} | {sum(errors.values())} "
        f"| {1e3 * np.percentile(latencies, 50):.1f} | {1e3 * np.percentile(latencies, 99):.1f} "
        f"| {len(latencies) / wall:.1f} | {rss['after_start']:.0f} | {rss['before']:.0f} "
        f"| {rss['after']:.0f} | {rss['max']:.0f} | {growth:+.1f}% |",
        "",
        "RSS before: when every client had sent its untimed requests; after: when the "
        "last client stopped.",
    ]
    if errors:
        lines += ["", f"Errors by code: {dict(errors)}; first: {first_errors}"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import tensorflow as tf

    logging.set_verbosity(logging.WARNING)
    unknown = set(FLAGS.transports) - {"grpc", "rest"} | set(FLAGS.batching) - {"on", "off"}
    if unknown:
        raise app.UsageError(f"unknown --transports/--batching values: {sorted(unknown)}")
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as workdir:
        raw_ids, base_path = export_model(workdir)
        lengths = [int(n) for n in FLAGS.history_lengths]
        histories = make_histories(raw_ids, 1024, lengths)
        servers = {}
        try:
            for batching in FLAGS.batching[:1] if FLAGS.soak_seconds else FLAGS.batching:
                log_path = os.path.join(workdir, f"server-batching-{batching}.log")
                servers[batching] = Server(base_path, batching == "on", log_path)
            if FLAGS.soak_seconds:
                result = soak(next(iter(servers.values())), histories)
            else:
                rows = run_grid(servers, histories)
        finally:
            for server in servers.values():
                server.stop()
    context = {
        "argv": sys.argv[1:],
        "machine": machine_description(),
        "tf_version": tf.__version__,
        "load_before": load_before,
        "load_after": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "note": FLAGS.note,
        "median_length": float(np.median([len(h) for h in histories])),
        "batching": FLAGS.batching[0],
    }
    if FLAGS.soak_seconds:
        write_soak_markdown(result, FLAGS.soak_output, context)
        with open(FLAGS.soak_output, encoding="utf-8") as f:
            print(f.read())
    else:
        write_markdown(rows, FLAGS.output, context)
        print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
