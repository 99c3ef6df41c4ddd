"""The output directory's lock: one run at a time per ``output.dir`` (flock on a file that names
its holder), taken before any work and released when the run ends, however it ends."""
from __future__ import annotations

import os
from pathlib import Path

from pipelines.errors import OutputError

LOCK = ".fewtrunc.lock"  # held (flock) while a run uses the directory; removed when it ends

_LOCKS: dict[str, int] = {}  # output directory (real path) -> descriptor of its held lock file


def lock_output(out: Path) -> None:
    """Take the exclusive lock of ``out`` (flock on ``out/.fewtrunc.lock``, which names the
    holder), or raise ``OutputError`` naming the run that holds it."""
    import fcntl
    import socket
    import time

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
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode(), 0)
    _LOCKS[key] = fd


def release_output(out) -> None:
    """Remove and release the lock of ``out`` if this process holds it."""
    fd = _LOCKS.pop(os.path.realpath(out), None)
    if fd is None:
        return
    path = Path(out) / LOCK
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except OSError:
        pass
    os.close(fd)
