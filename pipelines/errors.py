"""The small error hierarchy that decides what stops a run and how it is reported (as dolma does).

- ``ConfigError``: the configuration is wrong; raised before any work starts.
- ``InputError``: one input record or file is bad; names the file and line/row. Under
  ``input.on_error=skip`` it becomes a line of ``rejects.jsonl``; under ``fail`` it stops the run.
- ``FatalError``: an invariant is broken (token conservation, a checksum); never retried.
- ``OutputError``: the output directory cannot be used as it is: in use by another run, damaged,
  not a fewtrunc run, or not writable (no space, read-only, permission). Names the path and what
  to do.

Transient failures are not an error class of fewtrunc's: a lost Ray worker or Beam bundle is
retried by the engine's own mechanism (restarted actors, retried tasks, replayed bundles), which
is safe because every file is written under a private temporary name and renamed to a fixed one;
anything else ends the run, and the next run resumes from the completion markers.
"""


class FewtruncError(Exception):
    """Base of every error fewtrunc raises on purpose."""


class ConfigError(FewtruncError, ValueError):
    """A configuration key, value or file is wrong."""


class InputError(FewtruncError):
    """A bad input record or file. ``where`` is ``file`` or ``file:line``."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class FatalError(FewtruncError):
    """A broken invariant: the run stops and nothing is published."""


class OutputError(FewtruncError):
    """The output directory is busy, damaged, foreign or not writable; says what to do."""
