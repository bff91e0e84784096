"""Which versions of which models are served: config file, version policy, the version manager.

The manager follows TensorFlow Serving's rules: it serves the newest versions
the policy selects **among those that load**; a version that fails to load is
reported by GetModelStatus (state END, with its error) and never takes down the
version being served; it is retried when its files change. A new version is
loaded (and warmed up) completely before the version map is swapped in one
assignment, so requests in flight finish on the old version.
"""

import logging
import os
import threading
import time

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import file_system_storage_path_source_pb2

from hybrid_tfrs.serving import ServingError, clip
from hybrid_tfrs.serving.servable import LoadError, Servable

log = logging.getLogger("hybrid_tfrs.serving")


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


def folder_fingerprint(path):
    """(relative path, size, mtime) of every file under ``path``: changes when its files do."""
    entries = []
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class FailedVersion:
    """A version that did not load: its error, and its files' fingerprint when it failed."""

    def __init__(self, code, message, fingerprint):
        self.code = code
        self.message = message
        self.fingerprint = fingerprint


class VersionManager:
    """The loaded versions of one model, refreshed from its base path by ``poll``."""

    def __init__(self, config, max_rows, warmup=True):
        self.config = config
        self.name = config.name
        self.max_rows = max_rows
        self.warmup = warmup
        self.versions = {}  # version -> Servable; replaced whole, never mutated
        self.failed = {}  # version -> FailedVersion; replaced whole, never mutated
        self._poll_lock = threading.Lock()

    def version_folders(self):
        """Numeric folders of the base path (others, e.g. .tmp-export-* folders, are ignored)."""
        try:
            names = os.listdir(self.config.base_path)
        except OSError:
            return {}
        return {
            int(name): os.path.join(self.config.base_path, name)
            for name in names
            if name.isdigit() and os.path.isdir(os.path.join(self.config.base_path, name))
        }

    def poll(self):
        """Loads the versions the policy selects among those that load, then swaps them in.

        A selected version that fails is recorded and the policy is applied
        again without it, so the newest loadable versions are served; a failed
        version is tried again once its files change.
        """
        with self._poll_lock:
            folders = self.version_folders()
            failed = {v: f for v, f in self.failed.items() if v in folders}
            for version in list(failed):
                if folder_fingerprint(folders[version]) != failed[version].fingerprint:
                    log.info("retrying %s version %d: its files changed", self.name, version)
                    del failed[version]
            loaded = {v: s for v, s in self.versions.items() if v in folders}
            while True:
                wanted = self.config.select(set(folders) - set(failed))
                to_load = sorted(wanted - set(loaded), reverse=True)
                if not to_load:
                    break
                version = to_load[0]
                try:
                    loaded[version] = self._load(version, folders[version])
                except LoadError as error:
                    failed[version] = FailedVersion(
                        error.code, error.message, folder_fingerprint(folders[version])
                    )
                    log.error("failed to load %s version %d: %s", self.name, version, error.message)
            for version in sorted(set(self.versions) - wanted):
                log.info("unloading %s version %d", self.name, version)
            self.versions = {v: s for v, s in loaded.items() if v in wanted}
            self.failed = failed

    def _load(self, version, path):
        """The loaded (and warmed up) version; LoadError if it cannot be served."""
        started = time.perf_counter()
        try:
            servable = Servable(self.name, version, path)
            replayed = servable.warm_up(self.max_rows) if self.warmup else 0
        except LoadError:
            raise
        except Exception as error:  # noqa: BLE001 (whatever breaks, this version is failed)
            log.exception("loading %s version %d failed unexpectedly", self.name, version)
            first_line = clip(str(error).strip().split("\n")[0], 500)
            raise LoadError("UNKNOWN", f"cannot load {path}: {first_line}") from None
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
                    "NOT_FOUND", f"model {self.name!r} has no version label {clip(label)!r}"
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
        versions, failed = self.versions, self.failed
        rows = [(v, "AVAILABLE", "OK", "") for v in versions]
        rows += [(v, "END", f.code, f.message) for v, f in failed.items() if v not in versions]
        if version is not None:
            rows = [row for row in rows if row[0] == version]
            if not rows:
                raise ServingError("NOT_FOUND", f"model {self.name!r} has no version {version}")
        return sorted(rows, reverse=True)


def poll_forever(managers, wait_s, stop):
    """Polls every manager each ``wait_s`` seconds until ``stop`` is set."""
    while not stop.wait(wait_s):
        for manager in managers:
            try:
                manager.poll()
            except Exception:  # noqa: BLE001 (keep polling)
                log.exception("polling %s failed", manager.name)
