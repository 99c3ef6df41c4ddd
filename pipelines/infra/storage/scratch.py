"""How fewtrunc names its scratch files and folders on this machine's scratch disk (``TMPDIR``):
``fewtrunc-KIND-PID-RANDOM``. The pid in the name is what lets ``pipelines.infra.atomic.sweep_scratch``
remove those of a killed process. A leaf (no imports of fewtrunc's), so that the readers here and
the publishing calls of ``pipelines.infra.atomic`` name them alike."""
from __future__ import annotations

import os

# a scratch name, its pid as group 1 (what ``scratch_prefix`` starts)
SCRATCH_NAME = r"fewtrunc-[a-z]+-(\d+)-.+"


def scratch_prefix(kind: str) -> str:
    """``fewtrunc-KIND-PID-``: the prefix of a scratch file or folder of this process (``kind``:
    lowercase letters), which ``sweep_scratch`` removes once the process is gone."""
    return f"fewtrunc-{kind}-{os.getpid()}-"
