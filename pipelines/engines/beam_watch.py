"""A Beam pipeline run that ends, with one line, when a DirectRunner worker process dies.

The FnApiRunner (the DirectRunner of ``beam.running_mode=multi_processing``) does not survive the
loss of one of its worker processes (killed, or out of memory): while it reads the worker's
outputs it raises ``RuntimeError: Channel closed prematurely`` (a raw traceback), and while it
waits for the worker's answer to a bundle it waits forever (its ``run_worker`` thread raises
``Worker subprocess exited with return code N`` and nothing wakes the waiter). So the pipeline
runs on a thread of its own while this one waits for it or for that thread's error (seen through
``threading.excepthook``); either way a dead worker ends the run with a ``FatalError`` saying so,
and that the markers make a rerun resume. The surviving worker processes are stopped.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from pipelines.infra.errors import FatalError

_DEATHS = ("Worker subprocess exited with return code", "Channel closed prematurely")
_RUNNER_THREADS = ("run_worker", "beam_control_read", "read_grpc_client_inputs")
SETTLE_S = 5.0  # at most, for the stopped workers and the runner's threads that served them
WORKER_CMDS = (b"sdk_worker_main", b"pipelines.engines.beam_warm")  # Beam's, warm (beam_warm)
DIED = ("Beam: a worker process died mid-run ({}: killed, or out of memory?); the work done "
        "is kept (its markers): rerun the same command to resume")


def run_watched(pipeline):
    """``pipeline.run().wait_until_finish()``; a dead worker process raises ``FatalError``."""
    done, outcome = threading.Event(), {}
    previous = threading.excepthook

    def hook(args):
        if isinstance(args.exc_value, RuntimeError) and _DEATHS[0] in str(args.exc_value):
            outcome.setdefault("died", str(args.exc_value))
            done.set()
        elif not ("died" in outcome and args.thread is not None
                  and args.thread.name in _RUNNER_THREADS):
            previous(args)  # after a death, the runner's threads that lost it say nothing

    def target():
        try:
            outcome["state"] = pipeline.run().wait_until_finish()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.excepthook = hook
    try:
        threading.Thread(target=target, name="beam-pipeline", daemon=True).start()
        done.wait()
    finally:
        if "died" not in outcome:  # else kept until the runner's threads that lost it end
            threading.excepthook = previous
    error = outcome.get("error")
    died = outcome.get("died") or (str(error) if isinstance(error, RuntimeError) and any(
        d in str(error) for d in _DEATHS) else None)
    if died is not None:
        settle(stop_workers())
        if not any(t.name in _RUNNER_THREADS for t in threading.enumerate()):
            threading.excepthook = previous  # else kept while the runner's threads may still end
        raise FatalError(DIED.format(died.strip().rstrip(".").splitlines()[-1])) from None
    if error is not None:
        raise error
    return outcome["state"]


def settle(pids: list[int]) -> None:
    """Wait (bounded) until ``pids`` are gone and the runner's threads that served them have
    ended, so that what they log lands in Beam's scratch log, not after fewtrunc's line."""
    deadline = time.monotonic() + SETTLE_S
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for thread in threading.enumerate():
        if thread.name in _RUNNER_THREADS and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


def stop_workers() -> list[int]:
    """SIGTERM this process's Beam worker processes still alive (its children running
    ``sdk_worker_main``, a warm worker or its launcher, and theirs), so none waits for a runner
    that gave up; returns their pids."""
    me, kids, stopped = os.getpid(), {}, []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            kids.setdefault(int(stat[stat.rfind(")") + 2 :].split()[1]), []).append(
                int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    for child in kids.get(me, []):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if not any(cmd in cmdline for cmd in WORKER_CMDS):
                continue
        except OSError:
            continue
        for pid in [*kids.get(child, []), child]:
            try:
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
            except OSError:
                pass
    return stopped
