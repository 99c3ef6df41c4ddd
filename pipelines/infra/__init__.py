"""What the data pipeline and the training side share, and nothing else: the error hierarchy
(``errors``), storage for local paths and object stores (``storage/``: ``Location`` says what a
store can do), publishing a file only when complete (``atomic``), config loading (``configio``),
plots, the shard format and the manifest as readers take them, tokenizer loading and hashing.

``training/`` imports from ``pipelines`` only this subpackage (``tests/test_structure.py``), and
nothing here imports the rest of ``pipelines``."""
