"""The command-line tools: train, evaluate, export, preprocess (and, in
``hybrid_tfrs.serving``, serve and client).

Each module checks its flags without importing TensorFlow, has a ``run()``
console-script entry point and runs as ``python -m <module>``.
"""

# Every console script of setup.py: what ``python -m hybrid_tfrs`` lists where the
# package is not installed (a checkout on PYTHONPATH).
COMMANDS = {
    "hybrid-tfrs-train": "hybrid_tfrs.cli.train",
    "hybrid-tfrs-evaluate": "hybrid_tfrs.cli.evaluate",
    "hybrid-tfrs-export": "hybrid_tfrs.cli.export",
    "hybrid-tfrs-preprocess": "hybrid_tfrs.cli.preprocess",
    "hybrid-tfrs-serve": "hybrid_tfrs.serving.server",
    "hybrid-tfrs-client": "hybrid_tfrs.serving.client",
}
