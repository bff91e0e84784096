"""The command-line tools: hybrid-tfrs-train, hybrid-tfrs-evaluate, hybrid-tfrs-export.

Each module checks its flags without importing TensorFlow, has a ``run()``
console-script entry point and runs as ``python -m hybrid_tfrs.cli.<name>``.
"""

COMMANDS = {
    "hybrid-tfrs-train": "hybrid_tfrs.cli.train",
    "hybrid-tfrs-evaluate": "hybrid_tfrs.cli.evaluate",
    "hybrid-tfrs-export": "hybrid_tfrs.cli.export",
}
