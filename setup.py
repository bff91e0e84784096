"""hybrid-tfrs: a hybrid LinRec / FMLP-Rec sequential recommender for Keras 3 and TFRS.

``install_requires`` states the versions the package supports; the exact set
tested together (what ``make`` and CI install) is pinned in
``requirements.lock``: ``pip install -c requirements.lock ".[tfrs,serving,beam]"``.
apache-beam (the ``beam`` extra, for hybrid-tfrs-preprocess) caps protobuf
below 7, pyarrow below 26 and python-dateutil below 3; the lock satisfies both.
"""

from setuptools import find_packages, setup

setup(
    name="hybrid-tfrs",
    version="0.1.0",
    description=(
        "Hybrid sequential recommender: LinRec linear attention and FMLP-Rec "
        "FFT filter blended by a learned weight (or a per-user gate), for Keras 3 and TFRS."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    author="hybrid-tfrs maintainers",
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    python_requires=">=3.10",
    # The flagfiles live in the top-level flags/ folder and ship inside the
    # package as hybrid_tfrs.flagfiles, so `--config=beauty_hybrid` works after
    # `pip install` (see hybrid_tfrs/cli/config.py).
    packages=find_packages(include=["hybrid_tfrs", "hybrid_tfrs.*"]) + ["hybrid_tfrs.flagfiles"],
    package_dir={"hybrid_tfrs.flagfiles": "flags"},
    package_data={"hybrid_tfrs": ["py.typed"], "hybrid_tfrs.flagfiles": ["*.flags"]},
    install_requires=[
        "tensorflow>=2.20,<2.22",
        "tensorboard>=2.20,<2.22",
        "keras>=3.10,<4",
        "numpy>=1.26,<3",
        "absl-py>=2.1,<3",
        "pyarrow>=16",
        "matplotlib>=3.8",  # the per-run report (hybrid_tfrs.report)
        "scipy>=1.11",  # the Wilcoxon signed-rank test (hybrid_tfrs.significance)
    ],
    extras_require={
        "tfrs": ["tensorflow-recommenders>=0.7.3,<0.8", "tf-keras>=2.20,<2.22"],
        "serving": ["tensorflow-serving-api>=2.20,<2.22", "grpcio>=1.60", "requests>=2.31"],
        # hybrid-tfrs-preprocess: own logs -> prepared TFRecord shards (hybrid_tfrs.preprocess).
        "beam": ["apache-beam[tfrecord]>=2.77,<3", "google-crc32c>=1.5"],
        # An approximate item index from an export (hybrid_tfrs.ann).
        "ann": ["faiss-cpu>=1.9,<2"],
        # setuptools and wheel: tests/test_package.py builds the wheel offline;
        # faiss-cpu so that tests/test_ann.py runs whole.
        "dev": [
            "pytest>=8",
            "keras-rs>=0.4,<0.5",  # tests/test_evaluation.py checks the metrics against it
            "jax[cpu]>=0.6",
            "ruff>=0.6",
            "setuptools>=65",
            "wheel>=0.40",
            "faiss-cpu>=1.9,<2",
        ],
    },
    entry_points={
        "console_scripts": [
            "hybrid-tfrs-train = hybrid_tfrs.cli.train:run",
            "hybrid-tfrs-evaluate = hybrid_tfrs.cli.evaluate:run",
            "hybrid-tfrs-export = hybrid_tfrs.cli.export:run",
            "hybrid-tfrs-preprocess = hybrid_tfrs.cli.preprocess:run",
            "hybrid-tfrs-serve = hybrid_tfrs.serving.server:run",
            "hybrid-tfrs-client = hybrid_tfrs.serving.client:run",
        ]
    },
)
