"""Warm DirectRunner workers: Beam's worker processes, started while the driver plans the run.

The FnApiRunner starts its ``multi_processing`` workers only when the pipeline runs, and each
then spends ~1.2 CPU-s importing Beam's SDK harness and the stages' modules before its first
item: ~2 s of wall on 2 cores, every run, after the driver has already planned. Here the engine
starts ``num_workers`` *warm* workers as it enters (``WarmPool``), so those imports overlap the
planning; the runner's worker command is a small *launcher* (``python -m
pipelines.engines.beam_warm launch DIR``) that claims one warm worker, hands it the environment
the runner gave the launcher (the control and logging endpoints, the pipeline options), and
exits with the worker's exit status. To the runner a launcher is its worker process: killed, it
takes the warm worker with it; a warm worker that dies ends its launcher with status 1, which
the runner reports like any dead worker (``beam_watch``). When no warm worker is left to claim,
the launcher becomes Beam's own worker (``exec``), so the runner never waits on the pool.

Once the run is planned, the engine also sends each warm worker the first stage (its shell and
where the plan's parcel is, on the worker's stdin: ``WarmPool.ahead``), and the worker sets it
up (the tokenizer: ~0.5 CPU-s) while the runner still builds and starts the pipeline.

A warm worker nobody claims exits when the engine closes, or when its parent dies.
"""
from __future__ import annotations

import json
import os
import pickle
import socket
import struct
import sys
import threading

CLAIM_WAIT_S = 120.0  # a claimed warm worker still importing: how long its launcher waits
CLOSE_WAIT_S = 10.0  # a claimed worker's end, once the pipeline is over
STOCK = ("-m", "apache_beam.runners.worker.sdk_worker_main")


class WarmPool:
    """``count`` warm worker processes, each listening on ``folder/worker-I.sock`` (the
    engine's scratch folder, which it removes)."""

    def __init__(self, count: int, folder: str):
        import subprocess

        self.dir = folder
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", __name__, "serve", self.socket(i), str(os.getpid())],
            stdin=subprocess.PIPE) for i in range(count)]

    def socket(self, index: int) -> str:
        return os.path.join(self.dir, _name(index))

    def command(self) -> str:
        """The runner's worker command line (run through ``sh -c``)."""
        import shlex

        return " ".join(shlex.quote(a) for a in (sys.executable, "-m", __name__, "launch",
                                                 self.dir))

    def ahead(self, shell, key: str | None, path: str | None) -> None:
        """Have every warm worker set up stage ``shell`` now, with the plan of parcel ``key``
        read from ``path`` (None, None: the stage has no plan)."""
        message = pickle.dumps((shell, key, path), protocol=pickle.HIGHEST_PROTOCOL)
        for proc in self.procs:
            try:
                proc.stdin.write(struct.pack("<Q", len(message)) + message)
                proc.stdin.flush()
            except (OSError, ValueError):  # it died (or exited): its launcher says so, if used
                pass

    def close(self) -> None:
        """Stop the warm workers nobody claimed; a claimed one ends with its launcher (or is
        stopped after ``CLOSE_WAIT_S``)."""
        import subprocess

        for index, proc in enumerate(self.procs):
            claimed = os.path.exists(os.path.join(self.dir, "claim-" + _name(index)))
            if proc.poll() is None and not claimed:
                proc.kill()
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _name(index: int) -> str:
    return f"worker-{index}.sock"


# --- the warm worker ------------------------------------------------------------------------


def serve(path: str, parent: int) -> None:
    """Listen first (a launcher may connect while this process imports), import what a worker
    imports, take one launcher, then run Beam's SDK harness with its environment."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _in_folder(os.path.dirname(path), lambda: listener.bind(os.path.basename(path)))
    listener.listen(1)
    import apache_beam.runners.worker.sdk_worker_main as harness

    import pipelines.engines.beam_dofn  # noqa: F401 - what unpickling a stage's DoFn imports
    import pipelines.partitions  # noqa: F401
    import pipelines.stages  # noqa: F401

    threading.Thread(target=_set_up_ahead, daemon=True, name="ahead").start()
    listener.settimeout(1.0)
    while True:
        try:
            conn, _ = listener.accept()
            break
        except socket.timeout:
            if os.getppid() != parent:  # the driver is gone: nobody will claim this worker
                os._exit(0)
    listener.close()
    os.unlink(path)
    env = _line(conn.makefile("rb"))
    if env is None:
        raise SystemExit("fewtrunc beam worker: the launcher left before saying anything")
    env = json.loads(env)
    os.environ.clear()
    os.environ.update(env)
    conn.sendall(b"ok\n")  # from here on, this worker's end is its launcher's
    threading.Thread(target=_exit_with, args=(conn,), daemon=True, name="launcher").start()
    code = 0
    try:
        harness.main(sys.argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001 - printed as Beam's own worker would
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        conn.sendall(f"{code}\n".encode())
    finally:
        os._exit(code)  # the harness's threads are done with; no interpreter teardown


def _set_up_ahead() -> None:
    """The stages the engine sends on stdin (``WarmPool.ahead``), set up as they come."""
    from pipelines.engines.beam_dofn import set_up_ahead

    stream = sys.stdin.buffer
    while len(head := stream.read(8)) == 8:
        set_up_ahead(*pickle.loads(stream.read(struct.unpack("<Q", head)[0])))


def _exit_with(conn: socket.socket) -> None:
    """The launcher is gone (killed by the runner): so is this worker."""
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    os._exit(1)


def _line(reader) -> str | None:
    """One line of the other side (``socket.makefile``), None when it is gone first."""
    data = reader.readline()
    return data.decode().strip() if data.endswith(b"\n") else None


# --- the launcher ---------------------------------------------------------------------------


def launch(pool: str) -> int:
    """Claim a warm worker of ``pool`` (an exclusive ``claim-I`` file), send it this process's
    environment, and return its exit status; without one, become Beam's own worker."""
    names = sorted(n for n in _listdir(pool) if n.startswith("worker-") and n.endswith(".sock"))
    for name in names:
        try:
            os.close(os.open(os.path.join(pool, "claim-" + name), os.O_CREAT | os.O_EXCL))
        except OSError:
            continue  # claimed by another launcher
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(CLAIM_WAIT_S)
        reader = conn.makefile("rb")
        try:
            _in_folder(pool, lambda: conn.connect(name))
            conn.sendall((json.dumps(dict(os.environ)) + "\n").encode())
            taken = _line(reader) == "ok"
        except OSError:
            taken = False
        if not taken:
            conn.close()
            continue  # it died before taking the work: try the next
        conn.settimeout(None)
        try:
            reply = _line(reader)
        except OSError:
            reply = None
        if reply is None:
            print(f"fewtrunc: the warm Beam worker {name} died", file=sys.stderr)
            return 1
        return int(reply)
    os.execv(sys.executable, [sys.executable, *STOCK])


def _in_folder(folder: str, act):
    """``act()`` with ``folder`` as the working directory: a socket's path is limited to ~100
    bytes (``TMPDIR`` may be deep), so it is bound and reached by its name alone."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        return act()
    finally:
        os.chdir(here)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(launch(sys.argv[2]))
