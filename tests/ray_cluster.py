"""A real, private Ray cluster on this machine, for tests and benchmarks: start, submit, stop.

``LocalRayCluster`` runs ``ray start --head`` bound to 127.0.0.1 (node address, GCS, dashboard,
client server; every port Ray would fix is a free one, so clusters can coexist), with token
authentication (a fresh token passed through the environment, so nothing is written to
``~/.ray``), the current interpreter's ``bin`` first on ``PATH`` (so jobs run the same Python and
find ``fewtrunc``) and a private temp dir. It stops exactly what it started:
``ray start`` runs in a new session and ``stop()`` signals, by pid, the processes of that session
(``ray stop`` would stop every Ray on the machine, other people's too). Every wait is bounded.
"""
from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Ray's default worker ports are 10002-19999: pick ours outside that range.
_PORT_RANGE = (20000, 32000)


def free_port(taken: set[int] | None = None) -> int:
    taken = taken if taken is not None else set()
    for _ in range(200):
        port = random.randint(*_PORT_RANGE)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError("no free port on 127.0.0.1")


def loopback_env(base: dict | None = None, token: str | None = None) -> dict:
    """Environment for a Ray that lives on 127.0.0.1 with token authentication."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    # Ray turns 127.0.0.1 into the routable address unless "cluster mode" is off.
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if token:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = token
    return env


def _session_pids(sid: int) -> list[int]:
    """Pids of live processes whose session id is ``sid`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def exit_on_sigterm() -> None:
    """For scripts that start clusters: SIGTERM (``timeout``, ``kill``) raises ``SystemExit``, so
    ``finally`` blocks and ``with LocalRayCluster()`` stop the cluster. Python's default action
    ends the process at once, and the cluster, in its own session, would keep running."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class LocalRayCluster:
    """``with LocalRayCluster(num_cpus=2) as c: c.submit([...])`` - a head node on 127.0.0.1."""

    def __init__(self, num_cpus: int = 2, start_timeout: float = 120.0, object_store_mb: int = 300):
        self.num_cpus = num_cpus
        self.start_timeout = start_timeout
        self.object_store_mb = object_store_mb
        self.token = secrets.token_hex(16)
        self.env = loopback_env(token=self.token)
        self.temp_dir = ""
        self.sid = 0
        ports: set[int] = set()
        self.gcs_port = free_port(ports)
        self.dashboard_port = free_port(ports)
        self.client_port = free_port(ports)
        # Ray's fixed default (52365): a second cluster on the machine would get no job agent
        self.agent_port = free_port(ports)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray_bin(self) -> str:
        return str(Path(sys.executable).parent / "ray")

    def start(self) -> "LocalRayCluster":
        # Short path: Ray's unix sockets live under it (108-byte limit).
        self.temp_dir = tempfile.mkdtemp(prefix="ftray-", dir="/tmp")
        cmd = [
            self.ray_bin(), "start", "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.client_port}",
            f"--dashboard-agent-listen-port={self.agent_port}",
            f"--num-cpus={self.num_cpus}",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]
        proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, text=True,
        )
        self.sid = proc.pid  # the session every Ray daemon and worker of this cluster inherits
        try:
            out, _ = proc.communicate(timeout=self.start_timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"`ray start --head` did not return in {self.start_timeout:.0f} s")
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"`ray start --head` failed ({proc.returncode}):\n{out[-4000:]}")
        return self

    def submit(self, entrypoint: list[str], working_dir: str | os.PathLike = ".",
               timeout: float = 300.0) -> subprocess.CompletedProcess:
        """``ray job submit --working-dir DIR -- ENTRYPOINT`` against this cluster; waits."""
        cmd = [
            self.ray_bin(), "job", "submit", "--address", self.dashboard_url,
            "--working-dir", str(working_dir), "--", *entrypoint,
        ]
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                                  timeout=max(1.0, deadline - time.monotonic()),
                                  cwd=str(working_dir))
            # Right after `ray start` the job agent may not be up yet: the job was not created.
            if "No available agent" not in proc.stderr or time.monotonic() > deadline - 30:
                return proc
            time.sleep(1.0)

    def pids(self) -> list[int]:
        return _session_pids(self.sid) if self.sid else []

    def stop(self, grace: float = 5.0) -> None:
        """Stop every process this cluster started (by pid), then remove its temp dir."""
        if self.sid:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                pids = self.pids()
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
                deadline = time.monotonic() + wait
                while pids and time.monotonic() < deadline:
                    time.sleep(0.2)
                    pids = self.pids()
                if not pids:
                    break
            self.sid = 0
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = ""

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
