"""What every hybrid-tfrs command shares: flag parsing, --help, one-line errors, quiet TensorFlow.

Bad input ends with one ``error: ...`` line on stderr and exit code 2, before
TensorFlow is imported whenever the check does not need it.
"""

import os
import sys

from absl import app, flags

from hybrid_tfrs import tensorflow_logs

flags.DEFINE_boolean(
    "verbose", False, "Show TensorFlow's own log lines (C++ messages, INFO lines)."
)
FLAGS = flags.FLAGS

USAGE_ERROR = 2
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


def quiet_tensorflow():
    """Imports TensorFlow without its C++ and INFO log lines, unless --verbose."""
    tensorflow_logs.quiet_tensorflow(verbose=FLAGS.verbose)
