"""Data-parallel ``fewtrunc train``: the process group a launcher describes, the few collectives
the trainer uses, and how every rank stops when one fails.

``torchrun --nproc_per_node N -m pipelines.cli train CONFIG ...`` (or any launcher that sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) makes N ranks
rendezvous through the launcher's store (``env://``) and form a gloo group on CPU, or an NCCL group
on CUDA (rank ``LOCAL_RANK`` on GPU ``LOCAL_RANK``, plus a gloo group for small Python objects).
Without ``WORLD_SIZE`` > 1 no group is formed and every collective here is the identity, so one
code path serves both. Every collective waits at most ``train.dist_timeout_s``.

Stopping, so that no rank is left waiting forever:

- Before training, every step that can fail on one rank ends in ``agree``/``gather``: the ranks
  exchange their outcome, and when any failed, the lowest failing rank says why (one line, its own
  error) while the others stop quietly (``Stopped``); ``settle`` lets the speaker print before
  anyone exits (torchrun's agent kills the rest as soon as one rank exits).
- During training, a rank that raises posts its message in the store and exits; a killed rank
  just vanishes. torchrun's agent then stops the others and names the failed rank in its report.
  Without it, on gloo the others' next collective fails at once (the peer's sockets close) and they
  hold a roll call in the store: whoever does not answer within a quarter of the timeout (at most
  30 s) is named, with its message when it posted one, in the line each survivor prints. Under a
  plain launch the store lives in rank 0: when it is gone, that names rank 0. On NCCL a collective
  waits for a dead peer until the timeout, when PyTorch's watchdog ends the process itself.
"""
from __future__ import annotations

import datetime
import logging
import os
import time
from contextlib import contextmanager

import torch

from pipelines.infra.errors import ConfigError, FatalError, FewtruncError
from pipelines.infra.storage.redact import redact_text


DEFAULT_TIMEOUT_S = 600.0  # train.dist_timeout_s when the config itself cannot be read


class Stopped(FewtruncError):
    """This rank stops because another one failed and said why: exit 2, nothing printed."""


class CollectiveError(Exception):
    """A collective failed (a peer died, hung past the timeout, or the group broke)."""


def _env_int(name: str, default=None):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"the environment variable {name}={raw!r} (set by the launcher, e.g. torchrun) "
                          "is not an integer") from None


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, FewtruncError):
        text = f"{type(exc).__name__}: {text}"
    return redact_text(text if len(text) <= limit else text[: limit - 3] + "...")


def _agreed(exc: BaseException) -> BaseException:
    exc.agreed = True  # train.main prints it (or stays quiet for Stopped), then settles
    return exc


class Dist:
    """``rank`` of ``world`` (1 and 0 when not launched); ``at`` names the phase for messages."""

    def __init__(self):
        self.rank, self.world, self.local_rank = 0, 1, 0
        self.timeout_s, self.backend = 0.0, ""
        self.store = self.ctl = None
        self.at = "start-up"

    @classmethod
    def from_env(cls, timeout_s: float, cuda: bool) -> "Dist":
        """The group a launcher describes in the environment (none when ``WORLD_SIZE`` <= 1)."""
        d = cls()
        world = _env_int("WORLD_SIZE", 1)
        if world <= 1:
            return d
        rank, local = _env_int("RANK"), _env_int("LOCAL_RANK", _env_int("RANK"))
        if rank is None or not 0 <= rank < world:
            raise ConfigError(f"WORLD_SIZE={world} but RANK={os.environ.get('RANK')!r}: launch with torchrun, "
                              "or set RANK (0..WORLD_SIZE-1), LOCAL_RANK, MASTER_ADDR and MASTER_PORT")
        missing = [n for n in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(n)]
        if missing:
            raise ConfigError(f"WORLD_SIZE={world} but {' and '.join(missing)} not set: launch with torchrun, "
                              "or set them to where rank 0 listens")
        if cuda and local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local} but this machine shows {torch.cuda.device_count()} GPU(s): "
                              "start at most one process per GPU (--nproc_per_node)")
        d._start(rank, world, local, float(timeout_s), cuda)
        return d

    def _start(self, rank: int, world: int, local: int, timeout_s: float, cuda: bool) -> None:
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        try:
            store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timeout))
            if cuda:
                torch.cuda.set_device(local)
            dist.init_process_group("nccl" if cuda else "gloo", store=dist.PrefixStore("fewtrunc/pg", store),
                                    rank=rank, world_size=world, timeout=timeout)
            self.ctl = dist.new_group(backend="gloo", timeout=timeout) if cuda else dist.group.WORLD
        except (RuntimeError, ValueError, OSError) as exc:
            raise FatalError(f"rank {rank} of {world}: the process group did not form through {where} within "
                             f"train.dist_timeout_s={timeout_s:g} ({_short(exc, 160)}): start all {world} ranks "
                             "with the same command") from None
        self.rank, self.world, self.local_rank = rank, world, local
        self.timeout_s, self.backend = timeout_s, "nccl" if cuda else "gloo"
        if rank:  # warnings about the data every rank reads (e.g. no manifest) come from rank 0 once
            logging.getLogger("training.streaming").setLevel(logging.ERROR)
        self.store = dist.PrefixStore("fewtrunc/ctl", store)

    # -- collectives (identity for one process) ------------------------------------------------
    @contextmanager
    def collective(self):
        """Turn a failure inside (a collective, or DDP's gradient all-reduce) into ``CollectiveError``."""
        try:
            yield
        except RuntimeError as exc:
            if self.world == 1:
                raise
            raise CollectiveError(_short(exc, 200)) from exc

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks, in place."""
        if self.world > 1:
            import torch.distributed as dist
            with self.collective():
                dist.all_reduce(t)
        return t

    def gather_cat(self, t: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Every rank's 1-D ``t`` (any length) concatenated in rank order, and each rank's length."""
        if self.world == 1:
            return t, [t.numel()]
        import torch.distributed as dist
        with self.collective():
            n = torch.tensor([t.numel()], dtype=torch.int64, device=t.device)
            sizes = [torch.zeros_like(n) for _ in range(self.world)]
            dist.all_gather(sizes, n)
            sizes = [int(s) for s in sizes]
            if max(sizes) == 0:
                return t[:0], sizes
            padded = t.new_zeros(max(sizes))
            padded[: t.numel()] = t
            parts = [torch.empty_like(padded) for _ in range(self.world)]
            dist.all_gather(parts, padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)]), sizes

    def objects(self, obj) -> list:
        """Every rank's picklable ``obj``, in rank order."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world
        with self.collective():
            dist.all_gather_object(out, obj, group=self.ctl)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist
        box = [obj]
        with self.collective():
            dist.broadcast_object_list(box, src=0, group=self.ctl)
        return box[0]

    # -- agreeing on failures before training ---------------------------------------------------
    def gather(self, fn) -> list:
        """``fn()`` on every rank; every rank's result, or the first failure raised on all of them."""
        if self.world == 1:
            return [fn()]
        try:
            result, error = fn(), None
        except Exception as exc:  # a bug too: its rank prints the traceback, the others stop
            result, error = None, exc
        said = self.objects((None, _short(error)) if error is not None else (result, None))
        self._raise_first([s[1] for s in said], error)
        return [s[0] for s in said]

    def agree(self, fn):
        """``fn()`` on every rank, then stop every rank when any failed (only flags travel)."""
        if self.world == 1:
            return fn()
        try:
            result, error = fn(), None
        except Exception as exc:
            result, error = None, exc
        self._raise_first(self.objects(None if error is None else _short(error)), error)
        return result

    def _raise_first(self, said: list, error) -> None:
        first = next((r for r, s in enumerate(said) if s is not None), None)
        if first is None:
            return
        if first == self.rank:
            raise _agreed(error)
        raise _agreed(Stopped(f"rank {first} of {self.world} stopped: {said[first]}"))

    def fail_all(self, error: FewtruncError) -> None:
        """Every rank found the same ``error`` (from data they share): rank 0 says it."""
        raise _agreed(error if self.rank == 0 or self.world == 1 else Stopped(str(error)))

    def settle(self) -> None:
        """After an agreed failure: wait until every rank has printed what it says, then exit."""
        if self.world > 1:
            import torch.distributed as dist
            try:
                dist.barrier(group=self.ctl)
            except RuntimeError:
                pass  # a rank already gone: nothing left to wait for

    # -- a rank lost during training --------------------------------------------------------------
    def post_failure(self, exc: BaseException) -> None:
        """Leave this rank's reason in the store for the roll call of the others."""
        if self.world > 1:
            try:
                self.store.set(f"failed/{self.rank}", _short(exc))
            except Exception:  # the store is gone too: the roll call says so
                pass

    def lost(self, exc: CollectiveError) -> BaseException:
        """After a failed collective: the error naming the ranks that did not answer a roll call
        (``exc`` itself when every rank answered: then it was no peer's death)."""
        wait = min(30.0, self.timeout_s / 4)
        try:
            self.store.set(f"here/{self.rank}", "1")
            deadline = time.monotonic() + wait
            while True:
                missing = [r for r in range(self.world) if not self.store.check([f"here/{r}"])]
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            notes = {r: self.store.get(f"failed/{r}").decode() if self.store.check([f"failed/{r}"]) else ""
                     for r in missing}
        except Exception:  # the store is gone: under a plain launch rank 0 hosts it
            missing, notes = [0], {0: "its process is gone (it hosts the run's store)"}
        if not missing:
            return exc
        named = "; ".join(f"rank {r} of {self.world} stopped during {self.at}: "
                          f"{notes[r] or 'its process is gone (killed, or out of memory)'}" for r in missing)
        return FatalError(f"{named} (rank {self.rank} saw: {exc}); the other ranks stop too. Run the same "
                          "command again to resume from the newest checkpoint, with any number of processes")

    def close(self) -> None:
        """Leave the process group while the interpreter is fully alive.

        A DDP wrapper left in a reference cycle holds the gloo group (and its worker threads)
        until interpreter shutdown, where tearing them down can abort the process (SIGABRT,
        "terminate called without an active exception") after all its work is done: collect
        such garbage first, then destroy the group."""
        if self.world > 1:
            import gc

            import torch.distributed as dist
            gc.collect()
            if dist.is_initialized():
                dist.destroy_process_group()


LOCAL = Dist()  # one process: every collective is the identity
