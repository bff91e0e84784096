"""``--config=NAME_OR_PATH``: a shipped flagfile by name (``beauty_hybrid``) or any by path.

The flagfiles live in the repository's top-level ``flags/`` folder and ship in
the wheel as the package ``hybrid_tfrs.flagfiles``. ``--config=X`` is replaced
by ``--flagfile=<its path>`` where it stands, so flags after it override it.
"""

import importlib.resources
import os
from pathlib import Path

FLAGFILE_SUFFIX = ".flags"


class ConfigError(ValueError):
    """--config names no flagfile."""


def flagfile_folder():
    """The source checkout's flags/ folder if run from one, else the installed flagfiles."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "setup.py").is_file() and (checkout / "flags").is_dir():
        return checkout / "flags"
    return importlib.resources.files("hybrid_tfrs.flagfiles")


def available_configs():
    """Names ``--config`` accepts, sorted."""
    return sorted(
        entry.name[: -len(FLAGFILE_SUFFIX)]
        for entry in flagfile_folder().iterdir()
        if entry.name.endswith(FLAGFILE_SUFFIX)
    )


def flagfile_path(name_or_path):
    """The flagfile ``--config=name_or_path`` means; ConfigError if there is none."""
    if os.sep in name_or_path or "/" in name_or_path or name_or_path.endswith(FLAGFILE_SUFFIX):
        if not os.path.isfile(name_or_path):
            raise ConfigError(f"--config={name_or_path}: no such file")
        return name_or_path
    path = flagfile_folder() / f"{name_or_path}{FLAGFILE_SUFFIX}"
    if not path.is_file():
        raise ConfigError(
            f"--config={name_or_path}: no flagfile of that name; "
            f"available: {', '.join(available_configs())} (or give a path)"
        )
    return str(path)


def expand_config(argv):
    """``argv`` with every ``--config=X`` (or ``--config X``) replaced by ``--flagfile=<path>``."""
    expanded = []
    arguments = iter(argv)
    for argument in arguments:
        if argument in ("--config", "-config"):
            value = next(arguments, None)
            if value is None:
                raise ConfigError(
                    "--config: needs a name or a path, e.g. --config=synthetic_hybrid"
                )
        elif argument.startswith(("--config=", "-config=")):
            value = argument.split("=", 1)[1]
        else:
            expanded.append(argument)
            continue
        expanded.append(f"--flagfile={flagfile_path(value)}")
    return expanded
