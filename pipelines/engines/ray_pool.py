"""The Ray engine's pool of generic actors: every item on a free actor, a lost worker's item on any
live one, and one line instead of a hang when the cluster cannot place work.

Ray's own recovery (an actor restarted in place, its call retried on it) deadlocked when a node
died: the restarted actor waited for a CPU that the pool's idle actors on the other nodes held,
and the driver waited on it forever. So the pool recovers itself. Actors are created with no Ray
restarts or retries; an item whose worker is lost (its actor died, its node went away, Ray's
memory monitor killed it) goes back to the queue and the next free live actor takes it, and a
replacement actor is asked for (``ray.max_restarts``) without waiting for it: work goes only to
actors that answered ``ready``, so an actor the cluster cannot place holds nothing up. When no
item is running and none can start (no live actor, none placed) for ``ray.stall_timeout``
seconds, the run stops with one line naming the stage, its pending items and the resources they
wait for; the markers of the work done make the rerun resume. An item is tried again at most
``ray.max_task_retries`` times (-1: always).

A stage travels as its shell, and the run plan once per actor (``parcel``: unpickling the plan
with every call cost more than a small item's work). A stage's actors release their scratch
(local copies of spill files) when the stage ends, and again when the pool closes, before they
are killed (``ray.kill`` runs no clean-up in them).
"""
from __future__ import annotations

import gc
import itertools
import logging
import sys
import time

from pipelines.engines.parcel import join, split
from pipelines.infra.errors import FatalError, show

log = logging.getLogger("fewtrunc")
CLOSE_S = 20.0  # seconds actors get to clean up before they are killed


def release_scratch() -> None:
    """Remove this process's local copies of work files (spill files, a docs file)."""
    from pipelines.steps import spill
    from pipelines.steps.gather import release_copies

    gc.collect()  # a stage's call (and its SpillStore) dropped: its finalizers run now
    release_copies()
    spill.drop_docs_copy()


class StageWorker:
    """A Ray actor that runs any stage's items; set up once per stage (by name and run), after
    checking once per run that its node sees what the driver saw (``ray_node.check_node``)."""

    def __init__(self, threads: int):
        self.threads, self.key, self.call, self.checked = threads, None, None, None
        import pipelines.partitions  # noqa: F401 - the stages' imports, before the first item

    def ready(self) -> dict:
        from pipelines.engines.ray_node import describe

        return describe()

    def run(self, shell, parcel_key, parcel_ref: list, items: list) -> list:
        """``items`` of the stage ``shell`` + the plan of ``parcel_key`` (``parcel``): the plan
        is fetched (``parcel_ref``, wrapped in a list so that Ray does not resolve it on every
        call) and unpickled once per actor, the stage set up once per actor and stage."""
        key = (shell.name, parcel_key)
        if key != self.key:
            import ray

            self.release()
            stage = join(shell, parcel_key, lambda: ray.get(parcel_ref[0]))
            plan = getattr(stage, "plan", None)
            if getattr(plan, "fingerprint", None) not in (None, self.checked):
                from pipelines.engines.ray_node import check_node

                check_node(plan)
                self.checked = plan.fingerprint
            self.call = stage.setup(self.threads if stage.threaded else 1)
            self.key = key
        return self.call(items)

    def release(self) -> None:
        """The stage is over here: drop its set-up and the scratch it held."""
        self.key = self.call = None
        release_scratch()


def _lost_errors() -> tuple:
    """What says an item's worker is gone (not that the item failed)."""
    from ray import exceptions as e

    return (e.RayActorError, e.WorkerCrashedError, e.NodeDiedError, e.ObjectLostError,
            e.OutOfMemoryError, e.ActorUnschedulableError, e.TaskUnschedulableError,
            e.LocalRayletDiedError)


class Pool:
    """Actors of ``ray.cpus_per_actor`` CPUs, at most one per that many CPUs of the cluster (or
    ``ray.concurrency``), kept across stages (no second round of worker start-up)."""

    def __init__(self, rcfg):
        self.rcfg = rcfg
        self.ready: dict = {}  # key -> (handle, node info): placed, answered ready
        self.pending: dict = {}  # ready() call -> handle: asked for, not placed yet
        self.size = 0
        self.restarts = 0
        self._ids = itertools.count()
        self.by_node: dict = {}  # stage name -> {node id: items it did}, for timings.json
        self._parcel = None  # (key, ObjectRef) of the run plan's parcel

    # --- actors --------------------------------------------------------------------------
    def _remote(self):
        import ray

        return ray.remote(num_cpus=self.rcfg.cpus_per_actor, max_restarts=0,
                          max_task_retries=0)(StageWorker)

    def _spawn(self) -> None:
        actor = self._remote().remote(max(1, round(self.rcfg.cpus_per_actor)))
        self.pending[actor.ready.remote()] = actor

    def _fill(self, n: int) -> None:
        """Ask for actors up to ``min(n, size)`` (those pending count)."""
        import ray

        if not self.size:
            r = self.rcfg
            self.size = r.concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)
                                                    // max(r.cpus_per_actor, 1e-3)))
        while len(self.ready) + len(self.pending) < min(n, self.size):
            self._spawn()

    def warm(self) -> None:
        """Ask for the whole pool now (its actors start while the driver plans the run)."""
        self._fill(sys.maxsize)

    def _replace(self, n: int) -> None:
        """After a loss: one more actor, within ``ray.max_restarts``."""
        limit = self.rcfg.max_restarts
        if len(self.ready) + len(self.pending) < min(n, self.size) and (
                limit < 0 or self.restarts < limit):
            self.restarts += 1
            self._spawn()

    def _placed(self, ref) -> int | None:
        """A pending actor answered (ready, or died before): its id, or None."""
        import ray

        actor = self.pending.pop(ref)
        try:
            info = ray.get(ref)
        except _lost_errors() as exc:
            if getattr(exc, "actor_init_failed", False):  # would fail the same way again
                lines = [x for x in str(exc).splitlines() if x.strip()]
                raise FatalError(f"Ray: a fewtrunc actor cannot start on the cluster: "
                                 f"{lines[-1] if lines else type(exc).__name__}") from None
            log.warning("fewtrunc: a Ray actor was lost before it started (%s)", type(exc).__name__)
            return None
        key = next(self._ids)
        self.ready[key] = (actor, info)
        return key

    def _drop(self, key: int) -> None:
        import ray

        actor, _ = self.ready.pop(key)
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _put(self, parcel):
        """The parcel's object, put once per run (every stage holds the same plan)."""
        import ray

        if self._parcel is None or self._parcel[0] != parcel.key:
            self._parcel = (parcel.key, ray.put(parcel))
        return self._parcel[1]

    # --- one stage -------------------------------------------------------------------------
    def map(self, stage, items: list, report=None) -> list:
        """Every item on a free actor, one item per call (progress counted per item); returns
        the outputs in the order the calls finished. When it fails, the calls still running
        are cancelled, so the actors are free to release their scratch."""
        import ray

        running: dict = {}  # call -> (actor key, index of its item)
        try:
            return self._map(stage, items, report, running)
        except BaseException:
            for call in running:
                try:
                    ray.cancel(call)
                except Exception:  # noqa: BLE001 - done already, or its actor is gone
                    pass
            raise

    def _map(self, stage, items: list, report, running: dict) -> list:
        import ray

        from pipelines.engines.ray_node import name_node, node_name

        shell, parcel = split(stage)  # the plan goes once per actor, not with every call
        args = (shell, None, []) if parcel is None else (shell, parcel.key, [self._put(parcel)])
        outputs, lost = [], _lost_errors()
        todo = list(reversed(range(len(items))))  # indexes into items, the next one last
        losses = [0] * len(items)
        self._fill(len(items))
        free = list(self.ready)
        since = time.monotonic()  # last progress: an item done or an actor placed
        while todo or running:
            while todo and free:
                key, i = free.pop(), todo.pop()
                running[self.ready[key][0].run.remote(*args, [items[i]])] = (key, i)
            if not running and not self.pending:
                self._replace(len(todo))  # every actor lost and none asked for: ask again
                if not self.pending:
                    raise FatalError(f"Ray: the {stage.name} stage lost every actor and may "
                                     f"start no other (ray.max_restarts = "
                                     f"{self.rcfg.max_restarts}); rerun to resume")
            waited = None if running else max(0.0, self.rcfg.stall_timeout -
                                              (time.monotonic() - since))
            done, _ = ray.wait([*running, *self.pending], num_returns=1, timeout=waited)
            if not done:
                raise FatalError(self._stalled(stage, [items[i] for i in reversed(todo)]))
            (d,) = done
            since = time.monotonic()
            if d in self.pending:
                key = self._placed(d)
                if key is not None:
                    free.append(key)
                continue
            key, i = running.pop(d)
            where = node_name(self.ready[key][1])
            try:
                outputs += ray.get(d)
            except ray.exceptions.RayTaskError as exc:  # the item's own error
                cause = exc.cause if exc.cause is not None else exc
                raise name_node(cause, where) from None
            except lost as exc:
                losses[i] += 1
                self._lost(stage, items[i], losses[i], where, exc)
                self._drop(key)
                todo.append(i)  # the next free actor takes it first
                self._replace(len(todo) + len(running))
                free = [k for k in free if k in self.ready]
                continue
            free.append(key)
            done_here = self.by_node.setdefault(stage.name, {})
            node = self.ready[key][1]["node_id"]
            done_here[node] = done_here.get(node, 0) + 1
            if report is not None:
                report(stage.work_size([items[i]])[0])
        return outputs

    def _lost(self, stage, item, n: int, where: str, exc: BaseException) -> None:
        limit = self.rcfg.max_task_retries
        if 0 <= limit < n:
            raise FatalError(f"Ray: {stage.name} item {show(item)} lost its worker {n} times "
                             f"(last on {where}: {type(exc).__name__}); ray.max_task_retries = "
                             f"{limit}; rerun to resume")
        log.warning("fewtrunc: %s item %s lost its worker on %s (%s); another actor takes it",
                    stage.name, show(item), where, type(exc).__name__)

    def _stalled(self, stage, pending: list) -> str:
        import ray

        try:
            free = {k: v for k, v in ray.available_resources().items() if k == "CPU"}
            total = {k: v for k, v in ray.cluster_resources().items() if k == "CPU"}
        except Exception:  # noqa: BLE001 - the cluster itself is going away
            free, total = {}, {}
        return (f"Ray: the {stage.name} stage cannot place its work: {len(pending)} items "
                f"pending ({show(pending)}) have waited {self.rcfg.stall_timeout:g} s "
                f"(ray.stall_timeout) for an actor of {{'CPU': {self.rcfg.cpus_per_actor:g}}}; "
                f"the cluster has {total or 'no CPU'} in all, {free or 'no CPU'} free (a node "
                "lost?). The work done is kept: rerun to resume")

    # --- stage ends, pool ends ----------------------------------------------------------
    def release(self) -> None:
        """Every live actor drops its stage and scratch (best effort, bounded)."""
        self._each("release")

    def close(self) -> None:
        """Clean up in every actor, then kill them all (pending ones too)."""
        import ray

        self._each("release")
        for actor in [a for a, _ in self.ready.values()] + list(self.pending.values()):
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.ready, self.pending, self._parcel = {}, {}, None

    def _each(self, method: str) -> None:
        import ray

        calls = [getattr(a, method).remote() for a, _ in self.ready.values()]
        if calls:
            ray.wait(calls, num_returns=len(calls), timeout=CLOSE_S)
