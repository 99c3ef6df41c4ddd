"""The entry point of a run submitted as a Ray job (``ray.address=http://HEAD:8265``:
``ray_engine.submit_job``): inside the job, the run through ``pipelines.api`` as ``fewtrunc run``
would, on the cluster the job runs on (``ray.address=auto``), its error as the one line the
submitting side looks for. Run as ``python -m pipelines.engines.ray_job``; nothing imports it.
"""
from __future__ import annotations

import json
import os
import sys


def main() -> int:  # pragma: no cover - runs inside a submitted Ray job
    from pipelines.api import run
    from pipelines.config import load_run_config
    from pipelines.engines.ray_engine import _ERROR, _JOB_ENV
    from pipelines.infra.errors import FewtruncError
    from pipelines.infra.storage.redact import redact_text

    try:
        result = run(load_run_config(json.loads(os.environ[_JOB_ENV])))
    except FewtruncError as exc:
        print(redact_text(f"{_ERROR}{exc}"), file=sys.stderr, flush=True)
        return 2
    print(f"{result['status']}: {result['out']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
