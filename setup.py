"""hybrid-tfrs: a hybrid LinRec / FMLP-Rec sequential recommender for Keras 3 and TFRS.

Versions are pinned to the set tested together; `requirements.lock` pins the
whole dependency tree for reproducible installs (`make` uses it).
"""

from setuptools import find_packages, setup

setup(
    name="hybrid-tfrs",
    version="0.1.0",
    description=(
        "Hybrid sequential recommender: LinRec linear attention and FMLP-Rec "
        "FFT filter blended by a per-user gate, for Keras 3 and TFRS."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["hybrid_tfrs", "hybrid_tfrs.*", "serving"]),
    package_data={"hybrid_tfrs": ["py.typed"]},
    install_requires=[
        "tensorflow==2.21.0",
        "tensorboard==2.21.0",
        "keras==3.15.1",
        "keras-rs==0.4.0",
        "numpy==2.4.6",
        "absl-py==2.5.1",
        "pyarrow==26.0.1",
    ],
    extras_require={
        "tfrs": ["tensorflow-recommenders==0.7.7", "tf-keras==2.21.0"],
        "serving": ["tensorflow-serving-api==2.21.0", "grpcio==1.85.3", "requests==2.34.2"],
        "bench": ["matplotlib==3.11.2"],
        "dev": ["pytest==9.2.0", "jax[cpu]==0.10.2", "ruff==0.17.5"],
    },
)
