"""The output directory's lock: one run at a time per ``output.dir`` (flock on a file that names
its holder), taken before any work and released when the run ends, however it ends: a run holds
it as ``with holding(out, fingerprint):`` around everything it does to ``out`` (resume, the
stages, finalize), the one place that takes and releases it.

On an object store (no flock) the lock is an object, ``.fewtrunc.lock``, naming the run's
fingerprint and its holder. A run finding one of another fingerprint is refused; one of its own
fingerprint is taken over: it is the same run, killed or still running elsewhere, whose attempts
write the same bytes to the same keys. On S3 the object is created with a conditional PUT
(``If-None-Match: *``) and taken over only if unchanged since read (``If-Match``), so of two runs
starting at once exactly one creates it; elsewhere (GCS) it is a stat then a write, best effort
(``pipelines/infra/storage/locking.py``)."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from pipelines.infra.errors import OutputError
from pipelines.infra.storage.location import Location

LOCK = ".fewtrunc.lock"  # held (flock) while a run uses the directory; removed when it ends

_LOCKS: dict = {}  # output directory (real path) -> descriptor of its held lock file (a URL ->
# the holder line its lock object names)


def _holder() -> str:
    import socket
    import time

    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}"


@contextmanager
def holding(out, fingerprint: str = ""):
    """The lock of ``out`` for the block: taken on entry (``OutputError`` naming the holder when
    another run has it), released when the block ends, by an exception, a finished run or a
    run found complete."""
    lock_output(out, fingerprint)
    try:
        yield
    finally:
        release_output(out)


def lock_output(out: Path, fingerprint: str = "") -> None:
    """Take the exclusive lock of ``out`` (flock on ``out/.fewtrunc.lock``, which names the
    holder; on an object store, see above), or raise ``OutputError`` naming the run that holds
    it."""
    import fcntl

    where = Location.of(out)
    if where.remote:
        return _lock_object(out, fingerprint)
    out = Path(where.local_path)  # a path, or a file:// URL
    key = os.path.realpath(out)
    if key in _LOCKS:  # this process holds it already (an earlier run here ended in an error)
        return
    path = out / LOCK
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"output.dir {str(out)!r} is in use by another fewtrunc run "
                              f"({holder}); wait for it to end, or choose another output.dir"
                              ) from None
        except OSError as exc:
            os.close(fd)
            raise OutputError(f"output.dir {str(out)!r}: cannot lock {path} ({exc.strerror}); "
                              "use an output.dir on a file system with file locks") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file as we opened it: take the new one
    else:
        raise OutputError(f"output.dir {str(out)!r}: could not take its lock {path}")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{_holder()}\n".encode(), 0)
    _LOCKS[key] = fd


def _lock_object(out, fingerprint: str) -> None:
    from pipelines.infra.storage import StorageError, join
    from pipelines.infra.storage.locking import conditional_object

    key = str(out).rstrip("/")
    if key in _LOCKS:
        return
    holder = _holder()
    try:
        _take(conditional_object(join(key, LOCK)), key, fingerprint, holder)
    except StorageError as exc:  # denied, unreachable...: say which setting it is
        raise OutputError(f"output.dir {key!r}: {exc}") from None
    _LOCKS[key] = holder


def _take(lock, key: str, fingerprint: str, holder: str) -> None:
    body = (json.dumps({"fingerprint": fingerprint, "holder": holder}, indent=1, sort_keys=True)
            + "\n").encode()
    for _ in range(10):  # each turn lost to another run's create, takeover or release
        if lock.create(body):
            return
        found = lock.read()
        if found is None:  # released since: create it again
            continue
        held = _parse(found[0])
        if held.get("fingerprint") != fingerprint:
            raise OutputError(f"output.dir {key!r} is in use by another fewtrunc run "
                              f"({held.get('holder', 'unknown')}, another config or input); "
                              f"wait for it to end, or delete {lock.url} if that run is gone, "
                              "or choose another output.dir")
        if lock.replace(body, found[1]):  # the same run, restarted: take it over
            return
    raise OutputError(f"output.dir {key!r}: could not take its lock {lock.url} (other runs kept "
                      "changing it)")


def _parse(data: bytes) -> dict:
    try:
        held = json.loads(data)
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}


def release_output(out) -> None:
    """Remove and release the lock of ``out`` if this process holds it."""
    where = Location.of(out)
    if where.remote:
        holder = _LOCKS.pop(str(out).rstrip("/"), None)
        if holder is not None:
            _remove_lock_object(out, holder)
        return
    fd = _LOCKS.pop(os.path.realpath(where.local_path), None)  # as taken, for a file:// URL too
    if fd is None:
        return
    path = Path(where.local_path) / LOCK
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except OSError:
        pass
    os.close(fd)


def _remove_lock_object(out, holder: str) -> None:
    """Remove the lock object if it still names this run (a restart of the same run may have
    taken it over since); if the store went away, the lock stays and names this run."""
    from pipelines.infra.storage import join
    from pipelines.infra.storage.deleting import remove_object
    from pipelines.infra.storage.locking import conditional_object

    url = join(str(out), LOCK)
    try:
        found = conditional_object(url).read()
        if found is not None and _parse(found[0]).get("holder") == holder:
            remove_object(url)  # on S3 without a ``out/`` marker in its place
    except OSError:
        pass
