"""``pipelines.run``: the library entry point, the same job as ``fewtrunc run``."""
from __future__ import annotations

import errno
import os
import re
from typing import Sequence

from pipelines.config import load_run_config
from pipelines.engines import registry
from pipelines.infra.errors import ConfigError, FewtruncError, InputError, OutputError

CHECKS = ("size", "sha256")

# errno -> what to do, for the errors a full, read-only or foreign file system gives
_WRITE_ERRORS = {
    errno.ENOSPC: "free space there (or choose another output.dir) and run again: the run "
                  "resumes where it stopped",
    errno.EDQUOT: "free space within your quota (or choose another output.dir) and run again: "
                  "the run resumes where it stopped",
    errno.EFBIG: "the file system or the process's file size limit (ulimit -f) refuses a file "
                 "this large; raise the limit or choose another output.dir, then run again",
    errno.EROFS: "the file system is read-only: choose an output.dir on a writable one",
    errno.EACCES: "this user may not write there: fix its permissions or choose another "
                  "output.dir",
    errno.EPERM: "the operation is not permitted there: fix its permissions or attributes, or "
                 "choose another output.dir",
}


def run(config=None, overrides: Sequence[str] = (), *, progress: bool = False,
        engine_args: Sequence[str] = (), check: str = "size") -> dict:
    """Run a job from a ``RunConfig``, a dict or a YAML path, plus dotted ``key=value`` overrides.

    Returns ``{"status": "complete" | "already complete", "manifest": {...}, "out": dir}``.
    Raises ``ConfigError`` before any work for a bad config or a missing input path.
    ``check``: how a finished run's shards are checked before it counts as complete: ``size``
    (each exists with its recorded size) or ``sha256`` (and its recorded hash).
    """
    cfg = load_run_config(config, overrides)
    from pipelines.encoders import preload

    tcfg = cfg.tokenizer  # the backends load while the engine imports and the inputs resolve
    preload(tcfg.path, tcfg.backend, tcfg.special_tokens_in_text == "split")
    engine = registry.engine_class(cfg.engine)  # RunConfig validates the name
    takers = registry.flag_takers()
    if engine_args and cfg.engine not in takers:
        raise ConfigError(f"unknown arguments {' '.join(engine_args)} (only engine="
                          f"{'/'.join(takers)} passes extra --flags on, to "
                          f"{' / '.join(takers.values())})")
    if check not in CHECKS:
        raise ConfigError(f"check {check!r} is not one of {', '.join(CHECKS)}")
    try:
        return _run(engine, cfg, progress, tuple(engine_args), check)
    except FewtruncError:
        raise  # already one clear line (an unreadable input under on_error=fail, ...)
    except Exception as raised:
        exc = _write_error(raised)
        if exc is None:
            raise
        where = os.fsdecode(exc.filename) if exc.filename else cfg.output.dir
        out = os.path.realpath(cfg.output.dir)
        if os.path.commonpath([out, os.path.realpath(where)]) != out:
            raise InputError(where, exc.strerror) from raised  # not ours to write: an input
        raise OutputError(f"cannot write {where}: {exc.strerror}; "
                          f"{_WRITE_ERRORS[exc.errno]}") from raised


def _run(engine, cfg, progress: bool, engine_args: tuple, check: str) -> dict:
    """The run on ``engine`` (a class of ``pipelines/engines/``): handed elsewhere whole, or
    the driver here with the engine built for it."""
    from pipelines import driver

    result = engine.submit(cfg)
    if result is not None:
        return result
    with engine.session(cfg, engine_args) as built:
        return driver.run(cfg, built, progress, check)


def _write_error(exc: BaseException) -> OSError | None:
    """The OSError with a known errno behind ``exc``: itself, or what an engine wrapped it in
    (Ray's task errors keep it as ``cause``; others chain it)."""
    seen, first = set(), exc
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRORS:
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    # Beam hands a worker's error back as a new exception that keeps only its text
    found = re.search(r"OSError: \[Errno (\d+)\]", str(first))
    if found and int(found.group(1)) in _WRITE_ERRORS:
        code = int(found.group(1))
        return OSError(code, os.strerror(code))
    return None
