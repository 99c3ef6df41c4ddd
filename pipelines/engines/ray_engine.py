"""The Ray engine: the same steps as the local engine, scheduled by Ray Data on a cluster.

With at least 2 units per actor (``ray.rebalance=auto``), each unit is read, tokenized and
spilled whole by one actor of a pool (``map_batches(StreamUnitsActor)``, the local engine's loop
on one core). With fewer units, batches are spread over the actors:

    units --map_batches(ReadActor, pool)--> text batches (Arrow rows: unit, part, doc_ids, texts)
          --map_batches(TokenizeActor, actors)--> work/ray-parts/unit-U.part-P.arrow, written by
            the actor itself (deterministic names); only (unit, part, docs) rows return
    commit_units (one task per actor) --> the local engine's spill files + unit markers
    common.plan (driver: split + pack on document lengths only, 8 bytes per chunk in the packer)
    shard ranges --write_datasink(ShardSink), a task per node--> shard-K.arrow (gathered in
          parallel on a thread per core, fixed names)
    common.finalize --> rejects, stats, report, manifest (last)

Nothing here tokenizes, splits or packs: ``Reader``, ``Tokenize``, ``UnitSpill``, ``plan_rows``
and ``write_shard_job`` do, exactly as under the local engine, so shards are byte-identical.
Packing windows (``pack.window_tokens``) and shard boundaries (``output.rows_per_shard``) come
from the data in input order; ``part`` numbers restore that order whatever Ray's scheduling.
Every file is written to a temporary name and renamed to a fixed one, so a retried task or a
restarted actor overwrites instead of duplicating. The output directory must be visible to every
node (a shared file system) when the cluster has more than one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

from pipelines.engines import common
from pipelines.errors import ConfigError, FatalError

PARTS = "ray-parts"


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


def _actors(rcfg) -> int:
    if rcfg.concurrency:
        return rcfg.concurrency
    import ray

    cpus = ray.cluster_resources().get("CPU", 1)
    return max(1, int(cpus // max(rcfg.cpus_per_actor, 1e-3)))


def _actor_retries(rcfg) -> dict:
    """Restart and retry settings for an actor pool. Ray Data's defaults are already -1/-1
    (restart a lost actor, retry its call, without end); only other values are passed, through
    the remote-args keywords Ray 2.60 deprecates."""
    if rcfg.max_restarts == -1 and rcfg.max_task_retries == -1:
        return {}
    return {"max_restarts": rcfg.max_restarts, "max_task_retries": rcfg.max_task_retries}


def _cpu_nodes() -> int:
    import ray

    return max(1, sum(1 for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")))


def _data_context(rcfg, progress: bool):
    import logging

    from ray.data import DataContext

    # Ray Data logs every execution and "N rows and 288 B written" for the shard sink (the
    # shards are written by the sink's tasks, not counted by Ray): our summary says what counts
    logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.WARNING)
    dctx = DataContext.get_current()
    dctx.target_max_block_size = int(rcfg.block_mb * 2**20)
    dctx.enable_progress_bars = progress
    dctx.print_on_execution_start = False
    return dctx


def tokenize_on_ray(ctx, todo: list, rcfg, progress: bool = False) -> None:
    """Read, tokenize and spill ``todo`` on the cluster (every unit gets its marker)."""
    _data_context(rcfg, progress)
    actors = _actors(rcfg)
    if common.spread_batches(rcfg.rebalance, len(todo), actors):
        _tokenize_spread(ctx, todo, rcfg, actors)
    else:
        _tokenize_streamed(ctx, todo, rcfg, actors)


def _tokenize_streamed(ctx, todo: list, rcfg, actors: int) -> None:
    """Units plenty: each actor reads, tokenizes and spills whole units, one at a time, taking
    the next unit when it is free, largest first (load balance without any effect on the
    output: every unit has its own files)."""
    import ray
    import ray.data

    from pipelines.engines.ray_stages import StreamUnitsActor

    threads = max(1, round(rcfg.cpus_per_actor))
    # largest units first (in input order among equals): the last unit handed out is a small one
    order = sorted(todo, key=lambda u: (-sum(s.size for s in u.sources), u.index))
    ds = ray.data.from_items([{"unit": u.index} for u in order], override_num_blocks=len(order))
    ds = ds.map_batches(
        StreamUnitsActor,
        batch_size=1,
        batch_format="pyarrow",
        fn_constructor_args=(str(ctx.work), ctx.cfg.input, ctx.cfg.tokenizer,
                             {u.index: u for u in todo}, threads),
        compute=ray.data.ActorPoolStrategy(size=max(1, min(actors, len(todo))),
                                           max_tasks_in_flight_per_actor=1),
        num_cpus=rcfg.cpus_per_actor,
        **_actor_retries(rcfg),
    )
    done = sorted(r["unit"] for r in ds.take_all())
    if done != sorted(u.index for u in todo):
        raise FatalError(f"Ray spilled units {done}, expected {[u.index for u in todo]}")


def _tokenize_spread(ctx, todo: list, rcfg, actors: int) -> None:
    """Units few: reader actors spread each unit's text batches over the tokenize actors, which
    write token parts; one commit task per actor turns them into the units' spill files."""
    import ray
    import ray.data

    from pipelines.engines.ray_stages import ReadActor, TokenizeActor, commit_units

    parts_dir = ctx.work / PARTS
    shutil.rmtree(parts_dir, ignore_errors=True)  # parts of a killed run are redone
    parts_dir.mkdir(parents=True)
    units = {u.index: u for u in todo}
    ds = ray.data.from_items([{"unit": u.index} for u in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(
        ReadActor,
        batch_size=1,
        batch_format="pyarrow",
        fn_constructor_args=(ctx.cfg.input, ctx.cfg.tokenizer.batch_bytes, units),
        compute=ray.data.ActorPoolStrategy(size=max(1, min(actors, len(todo)))),
        num_cpus=rcfg.io_cpus,
        **_actor_retries(rcfg),
    )
    ds = ds.map_batches(
        TokenizeActor,
        batch_size=1,
        batch_format="pyarrow",
        fn_constructor_args=(ctx.cfg.tokenizer, max(1, round(rcfg.cpus_per_actor)),
                             str(parts_dir)),
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=rcfg.cpus_per_actor,
        **_actor_retries(rcfg),
    )
    written = ds.take_all()  # the actors wrote the parts; these are (unit, part, docs) rows
    if len({(r["unit"], r["part"]) for r in written}) != len(written):
        raise FatalError("Ray tokenized a batch twice in one run")
    commit = ray.remote(num_cpus=rcfg.io_cpus, max_retries=rcfg.max_task_retries)(commit_units)
    groups = [[u.index for u in todo[g::actors]] for g in range(min(actors, len(todo)))]
    ray.get([commit.remote(str(ctx.work), str(parts_dir), g) for g in groups])
    shutil.rmtree(parts_dir, ignore_errors=True)


def write_shards(ctx, docs, rows, rcfg) -> list:
    import ray
    import ray.data

    from pipelines.engines.ray_stages import ShardSink

    ranges = common.plan_shards_and_remove_strays(ctx, rows)
    if not ranges:
        return []
    light = dataclasses.replace(ctx, tokenize=None)  # the tokenizer is not needed to write
    sink = ShardSink(light, ray.put(rows), ray.put(docs))
    items = [{"shard": k, "start": a, "end": b} for k, (a, b) in enumerate(ranges)]
    writers = min(_cpu_nodes(), len(items))
    # One write task per node, writing its consecutive shards on a thread per core (the gather
    # and zstd release the GIL): a task needs a fresh worker process (~1 s of start-up and
    # imports), more than a shard takes to write.
    ray.data.from_items(items, override_num_blocks=writers).write_datasink(
        sink,
        concurrency=writers,
        ray_remote_args={"num_cpus": rcfg.cpus_per_actor, "max_retries": rcfg.max_task_retries,
                         "scheduling_strategy": "SPREAD"},
    )
    if [k for k, _ in sink.entries] != list(range(len(ranges))):
        raise FatalError(f"Ray wrote shards {[k for k, _ in sink.entries]}, "
                         f"expected 0..{len(ranges) - 1}")
    return [e for _, e in sink.entries]


def run(cfg, progress: bool = False, check: str = "size") -> dict:
    """Run (or resume, or recognize as finished) ``cfg`` on Ray; the local engine's contract."""
    if cfg.ray.address.strip().startswith(("http://", "https://")):
        return submit_job(cfg)
    t0 = time.perf_counter()
    ctx, finished = common.prepare(cfg, check)
    if finished is not None:
        return {"status": "already complete", "manifest": finished, "out": str(ctx.out)}
    started = connect(cfg.ray)
    try:
        import ray  # noqa: F401

        timings = {}
        todo = common.pending_units(ctx)
        if todo:
            tokenize_on_ray(ctx, todo, cfg.ray, progress)
        timings["tokenize_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        docs, rows, markers = common.plan(ctx)
        timings["pack_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        shards = write_shards(ctx, docs, rows, cfg.ray)
        timings["write_s"] = time.perf_counter() - t2
    finally:
        if started:
            import ray

            from pipelines.engines import ray_watchdog

            ray.shutdown()
            ray_watchdog.stop()
    timings["total_s"] = time.perf_counter() - t0
    manifest = common.finalize(ctx, docs, rows, markers, shards, timings)
    return {"status": "complete", "manifest": manifest, "out": str(ctx.out), "timings": timings}


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
        runtime_env={"working_dir": ".", "env_vars": {_JOB_ENV: json.dumps(config)}},
    )
    while (status := client.get_job_status(job)) not in (
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED
    ):
        time.sleep(poll_s)
    logs = client.get_job_logs(job)
    if status != JobStatus.SUCCEEDED:
        raise FatalError(f"Ray job {job} ended {status}:\n{logs[-4000:]}")
    manifest_path = Path(cfg.output.dir) / "manifest.json"
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
