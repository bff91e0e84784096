"""What every hybrid-tfrs command shares: flag parsing, --help, one-line errors, quiet TensorFlow.

Bad input ends with one ``error: ...`` line on stderr and exit code 2, before
TensorFlow is imported whenever the check does not need it.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

from absl import app, flags
from absl import logging as absl_logging

flags.DEFINE_boolean(
    "verbose", False, "Show TensorFlow's own log lines (C++ messages, INFO lines)."
)
FLAGS = flags.FLAGS

USAGE_ERROR = 2
# What TensorFlow's C++ side writes to stderr while it loads, whatever TF_CPP_MIN_LOG_LEVEL says.
_CPP_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ ]+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)
HELP_ARGUMENTS = (
    "-h",
    "-?",
    "--help",
    "-help",
    "--helpshort",
    "-helpshort",
    "--helpfull",
    "-helpfull",
)


def fail(message):
    """Prints ``error: message`` to stderr and returns the exit code of bad input."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return USAGE_ERROR


def run_command(main, command_module, argv=None):
    """Parses the flags of ``command_module``, then calls ``main(argv)``; no traceback on bad flags.

    ``--help`` prints the module's docstring and its flags, exit code 0.
    """
    argv = list(sys.argv if argv is None else argv)
    if any(argument in HELP_ARGUMENTS for argument in argv[1:]):
        try:
            print(_help(command_module, full=any(a.endswith("-helpfull") for a in argv[1:])))
            sys.stdout.flush()
        except BrokenPipeError:  # e.g. `--help | head`: the reader has seen enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    app.run(main, argv=argv, flags_parser=_parse_flags)


def _parse_flags(argv):
    try:
        remaining = FLAGS(argv)
    except flags.Error as error:
        sys.exit(fail(f"{error} (--help lists the flags)"))
    if len(remaining) > 1:
        sys.exit(
            fail(f"unexpected arguments: {' '.join(remaining[1:])} (flags look like --name=value)")
        )
    return remaining


def _help(command_module, full):
    if full:
        return f"{command_module.__doc__.strip()}\n\n{FLAGS.get_help()}"
    flag_help = [
        "\n".join(FLAGS.module_help(module_name).strip().splitlines()[1:])  # minus "<module>:"
        for module_name in (command_module.__name__, __name__)
    ]
    return "\n\n".join(
        [command_module.__doc__.strip(), "flags:\n" + "\n".join(flag_help)]
        + ["--helpfull also lists absl's own flags (--flagfile, --verbosity, ...)."]
    )


def quiet_tensorflow(verbose=None):
    """Imports TensorFlow without its C++ and INFO log lines, unless ``verbose``
    (None: --verbose, for the absl commands).

    TF_CPP_MIN_LOG_LEVEL=3 silences TensorFlow once it runs (the cuInit error
    on a machine without GPU); the lines its libraries print while loading
    ignore it, so stderr is filtered during the import.
    """
    verbose = FLAGS.verbose if verbose is None else verbose
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "3"
    level = logging.INFO if verbose else logging.ERROR
    with contextlib.nullcontext() if verbose else _without_cpp_log_lines():
        import tensorflow  # noqa: F401
    logging.getLogger("tensorflow").setLevel(level)
    # TensorFlow's Python side logs its INFO lines (SavedModel export) through absl.
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.ERROR)


@contextlib.contextmanager
def _without_cpp_log_lines():
    """Sends file descriptor 2 to a temporary file, then replays all but C++ log lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            sys.stderr.writelines(
                line for line in text.splitlines(keepends=True) if not _CPP_LOG_LINE.match(line)
            )
            sys.stderr.flush()
