"""The private Ray of ``engine=ray`` dies with the driver that started it, even by SIGKILL.

``ray.init()`` without an address starts the GCS, a raylet, the dashboard and runtime-env agents
and workers as descendants of the driver; killed with ``kill -9``, the driver leaves them running
(the agents, ~210 MB, for about a minute). ``start(driver_pid)`` runs this module as a small
process in its own session that keeps a list of the driver's Ray descendants (pid and start time,
from /proc) and waits on a pipe from the driver: end of file without a goodbye means the driver is
gone, and every listed process still alive is killed. ``stop()`` says goodbye after
``ray.shutdown()``. Linux only (/proc); elsewhere it is not started.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

GOODBYE = b"q"
MARK = "FEWTRUNC_RAY_OWNER"  # in the environment every process of the private Ray inherits
_watchdog: subprocess.Popen | None = None


def _table() -> dict[int, list[tuple[int, str]]]:
    """parent pid -> [(pid, start time)] of every live process."""
    kids: dict[int, list[tuple[int, str]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 19 and fields[0] != "Z":
            kids.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    return kids


def _is_ray(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return cmd.startswith(b"ray::") or b"/ray/" in cmd


def ray_descendants(root: int, skip: int = 0) -> dict[int, str]:
    """{pid: start time} of the Ray processes below ``root``."""
    kids, found, stack = _table(), {}, [root]
    while stack:
        for pid, start in kids.get(stack.pop(), []):
            if pid != skip and pid not in found:
                found[pid] = start
                stack.append(pid)
    return {pid: start for pid, start in found.items() if _is_ray(pid)}


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[19]


def marked(token: str, skip: int = 0) -> dict[int, str]:
    """{pid: start time} of every process whose environment carries ``MARK=token``: the Ray
    processes the driver started, even those re-parented after their parent died."""
    needle = f"{MARK}={token}".encode() + b"\0"
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == skip:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle not in f.read() + b"\0":
                    continue
        except OSError:
            continue
        start = _start_time(int(entry.name))
        if start is not None:
            found[int(entry.name)] = start
    return found


def watch(driver: int, token: str = "", interval: float = 0.25) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver
    seen: dict[int, str] = {}
    fd = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], interval)
        if ready:
            data = os.read(fd, 64)
            if data == GOODBYE or data.endswith(GOODBYE):
                return  # the driver shut Ray down itself
            if not data:
                break  # end of file: the driver is gone
        seen.update(ray_descendants(driver, skip=os.getpid()))
    if token:  # also those the last scan missed and whose parent is already gone
        seen.update(marked(token, skip=os.getpid()))
    _kill_all(seen)


def _kill_all(seen: dict[int, str]) -> None:
    """Stop every listed process still alive, and what they started since the last scan (a
    raylet starts workers until it is stopped), until nothing new appears; then kill them all."""
    stopped: dict[int, str] = {}
    todo = dict(seen)
    while todo:
        for pid, start in todo.items():
            if _start_time(pid) == start:  # the same process, not a reused pid
                try:
                    os.kill(pid, signal.SIGSTOP)
                    stopped[pid] = start
                except OSError:
                    pass
        found: dict[int, str] = {}
        for pid in list(todo):
            found.update(ray_descendants(pid, skip=os.getpid()))
        todo = {p: s for p, s in found.items() if p not in stopped}
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def start() -> None:
    """Watch this process's Ray descendants until ``stop()``; no-op without /proc."""
    global _watchdog
    if _watchdog is not None or not os.path.isdir("/proc/self"):
        return
    token = f"{os.getpid()}-{os.urandom(4).hex()}"
    _watchdog = subprocess.Popen(
        [sys.executable, "-m", "pipelines.engines.ray_watchdog", str(os.getpid()), token],
        stdin=subprocess.PIPE, start_new_session=True, close_fds=True,
    )
    os.environ[MARK] = token  # ray.init's processes inherit it


def stop() -> None:
    global _watchdog
    if _watchdog is None:
        return
    try:
        _watchdog.stdin.write(GOODBYE)
        _watchdog.stdin.close()
        _watchdog.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        _watchdog.kill()
    _watchdog = None
    os.environ.pop(MARK, None)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "")
