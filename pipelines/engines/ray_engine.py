"""The Ray engine: a pool of generic actors that run any stage (``ray_pool``), on a private
local Ray or a cluster (``ray.address``).

Each actor reserves ``ray.cpus_per_actor`` CPUs (= its stage threads) and sets a stage up the
first time it gets one of its items, so one pool serves every stage without a second round of
worker start-up. Items go to whichever actor is free (largest units first: the driver's order);
an item whose worker is lost goes to any live actor, and a cluster that cannot place work for
``ray.stall_timeout`` stops the run with one line (``ray_pool``). ``output.dir`` and the inputs
may be ``s3://`` or ``gs://`` URLs, so no node needs a shared file system; the tokenizer travels
in the run plan. The storage environment of the driver (``AWS_*``, ``STORAGE_EMULATOR_HOST``,
``GOOGLE_APPLICATION_CREDENTIALS``) goes to every worker in the runtime environment, except what
a submitted job's own runtime environment already sets (Ray refuses a key given twice).
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import time
from contextlib import contextmanager

from pipelines.engines.base import StageByStage
from pipelines.infra.errors import ConfigError, FatalError, FewtruncError
from pipelines.infra.storage.paths import as_path

_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_IN_JOB = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in a submitted job's driver


def _local_ray_env() -> dict:
    """For a private local Ray bound to 127.0.0.1 with token auth, writing no token to $HOME;
    returns what to restore once it is stopped.

    Ray replaces 127.0.0.1 by the routable address and listens on every interface unless its
    "cluster mode" is off; that switch is read when ``ray`` is imported, hence before the import
    (and patched when a caller imported Ray already). It is off for this private Ray only, which
    no other node ever joins (with it off, ``ray start --address`` refuses to join any cluster),
    and restored when the private Ray stops. Ray turns token authentication on for a new local
    cluster; a random token in the environment keeps it from writing ``~/.ray/auth_token``.
    """
    saved = {k: os.environ.get(k) for k in (_CLUSTER_SWITCH, "RAY_USAGE_STATS_ENABLED")}
    os.environ.setdefault(_CLUSTER_SWITCH, "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_AUTH_MODE", "token") == "token" and not (
        os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    ):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    return saved


def _restore(saved: dict) -> None:
    """The environment (and Ray's switch, read from it) as before ``_local_ray_env``."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if saved and "ray" in sys.modules:
        from ray._private import ray_constants as rc

        switch = os.environ.get(_CLUSTER_SWITCH)
        rc.ENABLE_RAY_CLUSTER = (switch.lower() in ("1", "true") if switch is not None
                                 else not rc.IS_WINDOWS_OR_OSX)


def storage_env() -> dict:
    """The driver's object-store settings, for workers that do not inherit its environment."""
    from pipelines.infra.storage.filesystems import _ENV

    return {k: os.environ[k] for k in _ENV if os.environ.get(k)}


def job_env_vars() -> dict | None:
    """The ``env_vars`` of the runtime environment of the Ray job this driver runs in (``ray job
    submit``, or a run submitted with ``ray.address=http://...``); None outside a job."""
    raw = os.environ.get(_IN_JOB)
    if not raw:
        return None
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}
    return dict(runtime_env.get("env_vars") or {})


def worker_env() -> dict:
    """The storage settings to hand ``ray.init``: the driver's, less those the job's runtime
    environment already gives every worker (Ray refuses to merge a key given twice)."""
    given = job_env_vars() or {}
    return {k: v for k, v in storage_env().items() if k not in given}


def connect(rcfg) -> tuple[bool, dict]:
    """Join or start Ray per ``ray.address``: (whether this call started it, so we shut it down;
    the environment to restore afterwards)."""
    address = rcfg.address.strip()
    if address.startswith(("http://", "https://")):
        raise ConfigError("internal: dashboard URLs are submitted as jobs, not joined")
    saved = {} if address else _local_ray_env()
    import ray

    if ray.is_initialized():
        return False, saved
    kwargs = {"logging_level": "WARNING", "log_to_driver": True}
    if worker_env():
        kwargs["runtime_env"] = {"env_vars": worker_env()}
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
    return True, saved


class RayEngine(StageByStage):
    """Connects (or starts a private Ray) on entry; closes its actors and stops what it started
    on exit."""

    def __init__(self, rcfg):
        self.rcfg, self.pool, self.started, self.saved = rcfg, None, False, {}
        # joining a running cluster: the driver connects and the pool starts its actors while
        # the inputs are listed (a private Ray is started only once the run needs it)
        self.start_early = bool(rcfg.address.strip())

    def __enter__(self):
        from pipelines.engines.ray_pool import Pool

        self.started, self.saved = connect(self.rcfg)
        self.pool = Pool(self.rcfg)
        if self.start_early:
            self.pool.warm()
        return self

    def __exit__(self, *exc) -> None:
        import ray

        try:
            if self.pool is not None:
                self.pool.close()
        finally:
            self.pool = None
            if self.started:
                from pipelines.engines import ray_watchdog

                ray.shutdown()
                ray_watchdog.stop()
            _restore(self.saved)

    @classmethod
    def from_config(cls, cfg, engine_args=()):
        return cls(cfg.ray)

    @classmethod
    @contextmanager
    def session(cls, cfg, engine_args=()):
        """Inside a Ray job, a store error says how to give the job storage settings."""
        try:
            yield cls(cfg.ray)
        except FewtruncError as exc:
            _in_job_hint(exc)
            raise

    @classmethod
    def submit(cls, cfg) -> dict | None:
        """``ray.address=http://...``: the run is submitted as a Ray job (``submit_job``)."""
        if cfg.ray.address.strip().startswith(("http://", "https://")):
            return submit_job(cfg)
        return None

    def run_stages(self, stages: list, items: list, progress: bool) -> dict:
        """The stages in turn; timings.json also says which Ray node did how many items."""
        timings = super().run_stages(stages, items, progress)
        timings["ray_nodes"] = self.pool.by_node
        return timings

    def map(self, stage, items: list, report=None) -> list:
        """A ``gather`` stage (a barrier over per-unit counts or per-partition summaries) runs
        here, on the driver; any other on the pool, whose actors then drop the stage's scratch."""
        if stage.gather:
            return stage.setup(1)(items)
        if not items:
            return []
        try:
            return self.pool.map(stage, items, report)
        finally:
            self.pool.release()


def _in_job_hint(exc) -> None:
    """A store error inside a Ray job that got no storage settings: say how to pass them (what
    the shell that ran ``ray job submit`` exported does not reach the job)."""
    from pipelines.infra.storage import StorageError

    if job_env_vars() is None or storage_env() or not isinstance(exc, (StorageError,
                                                                        ConfigError)):
        return
    text = str(exc)
    if not any(k in text for k in ("cannot reach", "access denied", "Could not resolve")):
        return
    hint = (" (this Ray job has no AWS_*/STORAGE_EMULATOR_HOST settings: variables exported in "
            "the shell that runs `ray job submit` do not reach the job; pass them with "
            "--runtime-env-json '{\"env_vars\": {...}}', export them on the head before "
            "`ray start`, or submit with `fewtrunc run ... ray.address=http://HEAD:8265`)")
    if isinstance(exc, StorageError):
        exc.reason += hint
        exc.args = (f"{exc.url}: {exc.reason}",)
    else:
        exc.args = (text + hint,)


# --- a dashboard URL: run as a Ray job ------------------------------------------------------

_JOB_ENV = "FEWTRUNC_RAY_JOB_CONFIG"
_ERROR = "fewtrunc run: error: "


def _check_uploadable(cfg) -> None:
    """A job runs on the cluster, in a copy of this directory: a local tokenizer.path must be a
    relative path inside it (it then travels with the job, and in the run plan to every
    worker); anything else would not exist there. Refused before submitting."""
    from pipelines.infra.storage.location import Location

    path = cfg.tokenizer.path
    if not path or Location.of(path).remote:
        return
    local = Location.of(path).local_path
    rel = os.path.relpath(os.path.abspath(local), os.getcwd())
    if os.path.isabs(local) or rel.startswith(".."):
        raise ConfigError(
            f"tokenizer.path {path!r}: with ray.address=http://... the run is a Ray job in a "
            "copy of the current directory, where this path does not exist; give a relative "
            "path inside the current directory, or an s3:// or gs:// URL")


def submit_job(cfg, poll_s: float = 1.0) -> dict:
    """``ray.address=http://HEAD:8265``: submit this run as a Ray job (working dir = cwd), with
    this shell's storage settings in the job's runtime environment."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from pipelines.infra.configio import to_dict

    _check_uploadable(cfg)
    config = to_dict(cfg)
    config["ray"]["address"] = "auto"
    client = JobSubmissionClient(cfg.ray.address.strip())
    job = client.submit_job(
        entrypoint="python -m pipelines.engines.ray_job",
        runtime_env={"working_dir": ".",
                     "env_vars": {**storage_env(), _JOB_ENV: json.dumps(config)}},
    )
    while (status := client.get_job_status(job)) not in (
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED
    ):
        time.sleep(poll_s)
    logs = client.get_job_logs(job)
    if status != JobStatus.SUCCEEDED:
        ours = [line for line in logs.splitlines() if line.startswith(_ERROR)]
        if ours:  # fewtrunc's own one-line error, as the job printed it
            raise FatalError(f"Ray job {job}: {ours[-1][len(_ERROR):]}")
        raise FatalError(f"Ray job {job} ended {status}:\n{logs[-4000:]}")
    manifest_path = as_path(cfg.output.dir) / "manifest.json"
    if not manifest_path.is_file():
        raise FatalError(f"Ray job {job} succeeded, but {manifest_path} is not visible here "
                         f"(it is on the cluster's file system). Job log:\n{logs[-2000:]}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return {"status": f"complete (Ray job {job})", "manifest": manifest, "out": cfg.output.dir}
