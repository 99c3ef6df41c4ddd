"""Crash points for resume tests: ``FEWTRUNC_CRASH=unit:1`` (or ``shard:2``, ``shard_tmp:0``,
``manifest:0``) makes the process SIGKILL itself at that point, exactly as ``kill -9`` would. Unset
in normal use; costs one dict lookup per unit or shard."""
from __future__ import annotations

import os
import signal


def crash_point(name: str, index: int) -> None:
    spec = os.environ.get("FEWTRUNC_CRASH")
    if spec and spec == f"{name}:{index}":
        os.kill(os.getpid(), signal.SIGKILL)
