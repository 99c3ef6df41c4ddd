"""The Ray engine: a pool of generic actors that run any stage, on a private local Ray or a
cluster (``ray.address``).

Each actor reserves ``ray.cpus_per_actor`` CPUs (= its stage threads) and sets a stage up the
first time it gets one of its items (a restarted actor does it again), so one pool serves both
stages without a second round of worker start-up. Items go to whichever actor is free (largest
units first: the driver's order). Ray restarts a lost actor and retries its call
(``ray.max_restarts``, ``ray.max_task_retries``); a retried item rewrites the same fixed file
names. ``output.dir`` and the inputs may be ``s3://`` or ``gs://`` URLs, so no node needs a
shared file system: the storage environment of the driver (``AWS_*``, ``STORAGE_EMULATOR_HOST``,
``GOOGLE_APPLICATION_CREDENTIALS``) goes to every worker in the runtime environment.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import time

from pipelines import driver
from pipelines.errors import ConfigError, FatalError
from pipelines.storage.paths import as_path


def _local_ray_env() -> None:
    """A private local Ray bound to 127.0.0.1 with token auth, writing no token to $HOME.

    Ray replaces 127.0.0.1 by the routable address and listens on every interface unless its
    "cluster mode" is off; that switch is read when ``ray`` is imported, hence before the import
    (and patched when a caller imported Ray already). Ray turns token authentication on for a new
    local cluster; a random token in the environment keeps it from writing ``~/.ray/auth_token``.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_AUTH_MODE", "token") == "token" and not (
        os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    ):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def storage_env() -> dict:
    """The driver's object-store settings, for workers that do not inherit its environment."""
    from pipelines.storage.filesystems import _ENV

    return {k: os.environ[k] for k in _ENV if os.environ.get(k)}


def connect(rcfg) -> bool:
    """Join or start Ray per ``ray.address``; True when this call started it (we shut it down)."""
    address = rcfg.address.strip()
    if address.startswith(("http://", "https://")):
        raise ConfigError("internal: dashboard URLs are submitted as jobs, not joined")
    if not address:
        _local_ray_env()
    import ray

    if ray.is_initialized():
        return False
    kwargs = {"logging_level": "WARNING", "log_to_driver": True}
    if storage_env():
        kwargs["runtime_env"] = {"env_vars": storage_env()}
    if address:
        ray.init(address=address, **kwargs)
    else:
        from pipelines.engines import ray_watchdog

        ray_watchdog.start()  # the private Ray dies with this driver, even by SIGKILL
        ray.init(
            num_cpus=rcfg.num_cpus or None,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            **kwargs,
        )
    return True


class StageWorker:
    """A Ray actor that runs any stage's items; set up once per stage (by name and run)."""

    def __init__(self, threads: int):
        self.threads, self.key, self.call = threads, None, None

    def run(self, stage, items: list) -> list:
        key = (stage.name, stage.plan.fingerprint)
        if key != self.key:
            self.key, self.call = key, stage.setup(self.threads if stage.threaded else 1)
        return self.call(items)


class RayEngine:
    """Connects (or starts a private Ray) on entry; kills its actors and stops what it started
    on exit."""

    def __init__(self, rcfg):
        self.rcfg, self.actors, self.started = rcfg, [], False

    def __enter__(self):
        self.started = connect(self.rcfg)
        return self

    def __exit__(self, *exc) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started:
            from pipelines.engines import ray_watchdog

            ray.shutdown()
            ray_watchdog.stop()

    def _pool(self, n: int) -> list:
        """``n`` actors, at most one per ``cpus_per_actor`` of the cluster (``ray.concurrency``)."""
        import ray

        r = self.rcfg
        size = r.concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)
                                           // max(r.cpus_per_actor, 1e-3)))
        remote = ray.remote(num_cpus=r.cpus_per_actor, max_restarts=r.max_restarts,
                            max_task_retries=r.max_task_retries)(StageWorker)
        while len(self.actors) < min(n, size):
            self.actors.append(remote.remote(max(1, round(r.cpus_per_actor))))
        return self.actors[:min(n, size)]

    def run_stages(self, stages: list, items: list, progress: bool) -> dict:
        return driver.map_in_turn(self.map, stages, items, progress)

    def map(self, stage, items: list, report=None) -> list:
        """Every item on a free actor, one item per call (progress counted per item); a
        ``gather`` stage (a barrier over per-unit counts or per-partition summaries) runs here,
        on the driver."""
        import ray

        if stage.gather:
            return stage.setup(1)(items)
        if not items:
            return []
        actors, ref, outputs = self._pool(len(items)), ray.put(stage), []
        todo, running = list(reversed(items)), {}  # call -> (index of its actor, item)
        free = list(range(len(actors)))
        while todo or running:
            while todo and free:
                i, item = free.pop(), todo.pop()
                running[actors[i].run.remote(ref, [item])] = (i, item)
            (done,), _ = ray.wait(list(running), num_returns=1)
            outputs += ray.get(done)  # raises the item's error
            i, item = running.pop(done)
            free.append(i)
            if report is not None:
                report(stage.work_size([item])[0])
        return outputs


def run(cfg, progress: bool = False, check: str = "size") -> dict:
    """Run (or resume, or recognize as finished) ``cfg`` on Ray; the local engine's contract."""
    if cfg.ray.address.strip().startswith(("http://", "https://")):
        return submit_job(cfg)
    return driver.run(cfg, RayEngine(cfg.ray), progress, check)


# --- a dashboard URL: run as a Ray job ------------------------------------------------------

_JOB_ENV = "FEWTRUNC_RAY_JOB_CONFIG"


def submit_job(cfg, poll_s: float = 1.0) -> dict:
    """``ray.address=http://HEAD:8265``: submit this run as a Ray job (working dir = cwd)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from pipelines.configio import to_dict

    config = to_dict(cfg)
    config["ray"]["address"] = "auto"
    client = JobSubmissionClient(cfg.ray.address.strip())
    job = client.submit_job(
        entrypoint="python -m pipelines.engines.ray_engine",
        runtime_env={"working_dir": ".",
                     "env_vars": {**storage_env(), _JOB_ENV: json.dumps(config)}},
    )
    while (status := client.get_job_status(job)) not in (
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED
    ):
        time.sleep(poll_s)
    logs = client.get_job_logs(job)
    if status != JobStatus.SUCCEEDED:
        raise FatalError(f"Ray job {job} ended {status}:\n{logs[-4000:]}")
    manifest_path = as_path(cfg.output.dir) / "manifest.json"
    if not manifest_path.is_file():
        raise FatalError(f"Ray job {job} succeeded, but {manifest_path} is not visible here "
                         f"(it is on the cluster's file system). Job log:\n{logs[-2000:]}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return {"status": f"complete (Ray job {job})", "manifest": manifest, "out": cfg.output.dir}


def _job_main() -> int:  # pragma: no cover - runs inside a submitted Ray job
    from pipelines.config import load_run_config

    cfg = load_run_config(json.loads(os.environ[_JOB_ENV]))
    result = run(cfg)
    print(f"{result['status']}: {result['out']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_job_main())
