"""A real, private Ray cluster on this machine, for tests and benchmarks: start, submit, stop.

``LocalRayCluster`` runs ``ray start --head`` on 127.0.0.1 (every port Ray would fix is a free
one, so clusters coexist) with token authentication (a fresh token in the environment: nothing
is written to ``~/.ray``), this interpreter's ``bin`` first on ``PATH`` (jobs run the same Python
and find ``fewtrunc``) and a private temp dir. Ray registers a node given 127.0.0.1 under the
routable address when the machine has one (guarded by the token); the switch that keeps
127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) also stops ``ray start --address`` from
joining, so it is not set. ``add_node(private=True)`` joins a node as another machine would be:
in its own mount namespace (``unshare --mount``: ``mount_namespace_problem`` says why not) with a
tmpfs on ``/tmp`` (its Ray temp dir, scratch and ``HOME``) and no object-store variables.

It stops exactly what it started: each ``ray start`` runs in a new session, and ``stop()``
signals the processes of those sessions by pid (``ray stop`` would stop every Ray on the
machine, other people's too). Every wait is bounded.
"""
from __future__ import annotations

import json
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
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # "0" would stop other nodes joining
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


STORE_VARS = ("AWS_", "STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")


def mount_namespace_problem() -> str:
    """Why this machine cannot start a node in a mount namespace of its own ("" when it can)."""
    tmp = os.path.realpath("/tmp")  # what the node mounts over (below)
    for what, path in (("this Python", sys.prefix), ("this checkout", str(Path(__file__).parent))):
        if os.path.commonpath([tmp, os.path.realpath(path)]) == tmp:
            return (f"{what} lives in {tmp}, which a node of its own replaces with an empty "
                    "private one")
    try:
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                               "mount -t tmpfs tmpfs /tmp"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`unshare --mount` cannot run: {exc}"
    return "" if proc.returncode == 0 else \
        f"`unshare --mount` is not permitted here: {proc.stderr.strip()[:200]}"


class RayNode:
    """A node that ``LocalRayCluster.add_node`` started: the processes of one session."""

    def __init__(self, sid: int):
        self.sid, self.node_id = sid, ""  # its Ray node id, once it joined

    def pids(self) -> list[int]:
        return _session_pids(self.sid) if self.sid else []

    def raylet_pid(self) -> int:
        for pid in self.pids():
            try:
                if Path(f"/proc/{pid}/exe").resolve().name == "raylet":
                    return pid
            except OSError:
                continue
        raise RuntimeError("the node has no raylet")

    @property
    def mount_ns(self) -> str:
        """Its mount namespace, as ``/proc/PID/ns/mnt`` names it (``mnt:[N]``)."""
        return os.readlink(f"/proc/{self.raylet_pid()}/ns/mnt")

    def root(self) -> Path:
        """This machine's view of the node's file system (its private ``/tmp`` below it)."""
        return Path(f"/proc/{self.raylet_pid()}/root")

    def kill_raylet(self) -> None:
        """SIGKILL the node's raylet (its workers and agents end with it)."""
        os.kill(self.raylet_pid(), signal.SIGKILL)

    def stop(self, grace: float = 5.0) -> None:
        _stop_session(self.pids, grace)
        self.sid = 0


def _stop_session(pids, grace: float) -> None:
    """SIGTERM, then SIGKILL, the processes ``pids()`` lists, until none is left (bounded)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        found = pids()
        for pid in found:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while found and time.monotonic() < deadline:
            time.sleep(0.2)
            found = pids()
        if not found:
            return


def _started(proc: subprocess.Popen, timeout: float, what: str, stop) -> None:
    """Wait for a ``ray start`` to return; on a failure, ``stop()`` what it started, and say."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = f"did not return in {timeout:.0f} s"
    if proc.returncode != 0:
        stop()
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{out[-4000:]}")


def exit_on_sigterm() -> None:
    """For scripts that start clusters: SIGTERM (``timeout``, ``kill``) raises ``SystemExit``, so
    ``finally`` blocks and ``with LocalRayCluster()`` stop the cluster. Python's default action
    ends the process at once, and the cluster, in its own session, would keep running."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class LocalRayCluster:
    """``with LocalRayCluster(num_cpus=2) as c: c.submit([...])`` - a head node on 127.0.0.1."""

    def __init__(self, num_cpus: int = 2, start_timeout: float = 120.0, object_store_mb: int = 300,
                 env: dict | None = None):
        self.num_cpus = num_cpus
        self.start_timeout = start_timeout
        self.object_store_mb = object_store_mb
        self.token = secrets.token_hex(16)
        self.env = loopback_env(env, token=self.token)  # the head's, and its jobs' drivers'
        self.temp_dir = ""
        self.sid = 0
        self.nodes: list[RayNode] = []
        self.ports = ports = set()  # taken by this cluster's nodes
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
        _started(proc, self.start_timeout, "`ray start --head`", self.stop)
        return self

    def add_node(self, num_cpus: int = 1, private: bool = True, object_store_mb: int = 100,
                 timeout: float = 120.0) -> RayNode:
        """Join one more node to this cluster; ``private``: in its own mount namespace, with a
        tmpfs on ``/tmp`` (temp dir, scratch, ``HOME``) and no object-store variables (see the
        module). Returns once the cluster counts it."""
        env = {k: v for k, v in self.env.items() if not k.startswith(STORE_VARS)}
        cmd = [self.ray_bin(), "start", f"--address={self.address}",
               "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
               f"--object-store-memory={object_store_mb * 1024 * 1024}",
               f"--dashboard-agent-listen-port={free_port(self.ports)}",
               "--disable-usage-stats"]
        if private:
            env.update(HOME="/tmp/home", TMPDIR="/tmp")
            cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                   'mount -t tmpfs -o size=1g tmpfs /tmp && mkdir -p "$HOME" && exec "$@"',
                   "sh", *cmd]
        before = self.alive_nodes()  # a node killed just before may still count: ids
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, text=True)
        node = RayNode(proc.pid)
        self.nodes.append(node)
        _started(proc, timeout, "`ray start --address`", node.stop)
        deadline = time.monotonic() + timeout
        while not (new := self.alive_nodes() - before):
            if time.monotonic() > deadline:
                raise RuntimeError("the new node did not join the cluster")
            time.sleep(0.5)
        node.node_id = new.pop()
        return node

    def alive_nodes(self) -> set[str]:
        """The ids of the nodes the cluster counts as alive (its dashboard's state API)."""
        proc = subprocess.run(
            [self.ray_bin(), "list", "nodes", "--address", self.dashboard_url, "--format",
             "json", "--filter", "state=ALIVE"], env=self.env, capture_output=True, text=True,
            timeout=60)
        return {n["node_id"] for n in json.loads(proc.stdout)} if proc.returncode == 0 else set()

    def submit(self, entrypoint: list[str], working_dir: str | os.PathLike = ".",
               timeout: float = 300.0, runtime_env_json: str = "", env: dict | None = None
               ) -> subprocess.CompletedProcess:
        """``ray job submit --working-dir DIR [--runtime-env-json J] -- ENTRYPOINT`` against
        this cluster, from a shell with ``env`` (default: the cluster's); waits."""
        cmd = [self.ray_bin(), "job", "submit", "--address", self.dashboard_url,
               "--working-dir", str(working_dir),
               *(["--runtime-env-json", runtime_env_json] if runtime_env_json else []),
               "--", *entrypoint]
        deadline = time.monotonic() + timeout
        while True:
            left = max(1.0, deadline - time.monotonic())
            proc = subprocess.run(cmd, env=self.env if env is None else env, text=True,
                                  capture_output=True, timeout=left,
                                  cwd=str(working_dir))
            # Right after `ray start` the job agent may not be up yet: the job was not created.
            if "No available agent" not in proc.stderr or time.monotonic() > deadline - 30:
                return proc
            time.sleep(1.0)

    def pids(self) -> list[int]:
        return _session_pids(self.sid) if self.sid else []

    def stop(self, grace: float = 5.0) -> None:
        """Stop every process this cluster started (by pid): its nodes, then the head; then
        remove its temp dir."""
        for node in self.nodes:
            node.stop(grace)
        self.nodes = []
        if self.sid:
            _stop_session(self.pids, grace)
            self.sid = 0
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = ""

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
