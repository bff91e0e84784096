"""``python -m hybrid_tfrs``: lists the commands, each with ``python -m`` form and summary."""

import ast
import importlib.util
from importlib.metadata import entry_points

from hybrid_tfrs import __version__
from hybrid_tfrs.cli import COMMANDS


def commands():
    """``{script: module}``: the installed hybrid-tfrs-* console scripts, else the package's own."""
    installed = {
        entry.name: entry.value.split(":")[0]
        for entry in entry_points(group="console_scripts")
        if entry.name.startswith("hybrid-tfrs-")
    }
    return installed or COMMANDS


def summary(module):
    """The first line of a module's docstring, read without importing it (no TensorFlow)."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.origin:
        return f"(not installed: no module {module})"
    with open(spec.origin, encoding="utf-8") as handle:
        docstring = ast.get_docstring(ast.parse(handle.read())) or ""
    return docstring.splitlines()[0].split(": ", 1)[-1] if docstring else ""


def main():
    print(f"hybrid-tfrs {__version__}; each command takes --help:\n")
    for script, module in sorted(commands().items()):
        print(f"  {script:<22} (python -m {module})\n      {summary(module)}")


if __name__ == "__main__":
    main()
