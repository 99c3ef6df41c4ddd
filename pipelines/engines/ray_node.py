"""What a Ray worker checks about its node before it works for a run, and how its errors name it.

On a cluster without a shared file system, a local path that the driver sees may not exist on
another node, and a node may lack the store access the driver has (its own instance role, no
credentials). Left to the stages, the first would surface late (a reader turns an unreadable
input into rejects, so the output would silently lack documents) and the second as a line that
does not say which node. ``check_node(plan)`` runs once per actor and run, before its first
item: ``output.dir`` and one input of each directory or bucket must be visible from here, or the
run stops with one line naming this node. An error an item raises on a node reaches the driver
with the node named (``name_node``).
"""
from __future__ import annotations

import os
import socket

from pipelines.infra.errors import ConfigError, FewtruncError, InputError, show
from pipelines.infra.storage.location import Location

MAX_PROBES = 64  # inputs stat'ed per node and run: one per directory or bucket, at most this


def describe() -> dict:
    """This process's node: its Ray node id, IP address, host name and pid."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(), "host": socket.gethostname(),
            "pid": os.getpid()}


def node_name(info: dict | None) -> str:
    """``Ray node 10.0.0.7 (host host-7, id 3f2a1b9c)``: what a message calls a node."""
    if not info:
        return "a Ray node"
    return f"Ray node {info['ip']} (host {info['host']}, id {info['node_id'][:8]})"


def _probes(plan) -> list[tuple[str, str]]:
    """(what the config calls it, a path or URL to stat): output.dir when local, and the first
    source of each distinct input directory or bucket (Hugging Face datasets excepted)."""
    probes = [] if Location.of(plan.out).remote else [("output.dir", str(plan.out))]
    groups: dict = {}
    for unit in plan.units:
        for source in unit.sources[:1]:
            if source.format == "hf" or source.error:
                continue
            path = source.path
            where = Location.of(path)
            group = where.bucket if where.remote else os.path.dirname(where.local_path)
            if group not in groups and len(groups) < MAX_PROBES:
                groups[group] = path
    return probes + [("input", p) for p in groups.values()]


def check_node(plan) -> None:
    """Stop with one line when this node cannot see what the driver saw (see the module)."""
    from pipelines.infra.storage import StorageError, stat

    where = node_name(describe())
    for what, path in _probes(plan):
        if what == "output.dir":
            if not os.path.isdir(Location.of(path).local_path):
                raise ConfigError(
                    f"output.dir {show(path)} is not visible on {where}: a local output.dir on "
                    "a Ray cluster must be on a file system every node mounts at the same "
                    "path; use an s3:// or gs:// output.dir otherwise")
            continue
        try:
            found = stat(path)
        except StorageError as exc:
            raise name_node(exc, where) from None
        if found is None:
            raise ConfigError(
                f"input {show(path)} is not visible on {where} (the driver read it): local "
                "inputs of a Ray cluster must be on a file system every node mounts at the "
                "same path; put them on s3:// or gs:// otherwise")


def name_node(exc: BaseException, where: str) -> BaseException:
    """``exc`` (a fewtrunc error from a worker) with ``where`` (``node_name``) in its one line;
    a bad input record (``InputError``) is the data's, not the node's: left as it is."""
    from pipelines.infra.storage import StorageError

    if not isinstance(exc, FewtruncError) or isinstance(exc, InputError) or where in str(exc):
        return exc
    if isinstance(exc, StorageError):
        exc.reason = f"{exc.reason} (on {where})"
        exc.args = (f"{exc.url}: {exc.reason}",)
    elif exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]} (on {where})",) + exc.args[1:]
    return exc
