"""Paths as URLs: ``s3://``, ``gs://``, ``file://`` and local paths (``memory://`` and other
fsspec protocols where fsspec has them), behind one small API.

- ``resolve`` (``filesystems.py``): a path or URL -> (pyarrow filesystem, path in it), with
  credentials and endpoints from the standard environment;
- ``stat``, ``exists``, ``list_files``, ``glob`` (``listing.py``): sorted listings and the
  size/mtime a run fingerprints inputs with;
- ``open_input``, ``read_bytes``, ``local_copy`` (``reading.py``): streaming reads, and a local
  copy for formats read by random access (Parquet);
- ``StorageError`` (``errors.py``): one line naming the URL for a missing bucket or key, denied
  access or an unreachable endpoint;
- ``redact_text``, ``inline_credentials`` (``redact.py``): user info and signatures masked in
  every URL that is written down; credentials inside ``s3://``/``gs://`` URLs told apart;
- ``remove``, ``remove_object``, ``remove_objects`` (``deleting.py``): deletes that leave no
  zero-byte "directory" object behind on S3 (pyarrow's ``delete_file`` writes one);
- ``conditional_object`` (``locking.py``): create-if-absent and replace-if-unchanged of one
  object, for the output lock (exclusive on S3, best effort elsewhere);
- ``put_object``, ``upload_file`` (``writing.py``): one object written in one request;
- publishing (a file becomes visible only when complete) is ``pipelines.infra.atomic``, which writes
  local paths and URLs alike (URLs through ``writing.py``).

The modules import each other one way: ``urls``, ``redact``, ``scratch`` (names of scratch
files) -> ``errors`` -> ``filesystems``, ``guard`` (errors as ``StorageError`` lines) ->
``s3_client``, ``writing``, ``listing`` -> ``deleting``, ``reading`` -> ``locking``, ``paths``;
nothing here imports ``pipelines.infra.atomic``, which stands above them.

Local paths never go through pyarrow: they keep the ``os`` calls and the buffered ``open`` the
readers used before, so local runs are unchanged.
"""
import importlib

# name -> the submodule that defines it. Loaded on first use (PEP 562), not here: a package
# __init__ that imports its submodules deadlocks two threads that import them at the same time
# (a run preloads the tokenizer in a thread while the engine is imported)
_WHERE = {
    "StorageError": "errors", "configure": "filesystems", "resolve": "filesystems",
    **dict.fromkeys(["FileStat", "exists", "glob", "list_files", "makedirs", "require", "stat"],
                    "listing"),
    **dict.fromkeys(["UrlPath", "as_path", "remove_tree"], "paths"),
    **dict.fromkeys(["local_copy", "open_input", "read_bytes"], "reading"),
    **dict.fromkeys(["is_url", "join", "local_path", "scheme_of"], "urls"),
    **dict.fromkeys(["inline_credentials", "redact_text", "redact_tree"], "redact"),
    **dict.fromkeys(["remove", "remove_object", "remove_objects"], "deleting"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
