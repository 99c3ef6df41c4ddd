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

Every message is redacted when the error is made (``pipelines.infra.storage.redact``): a URL's user
info and signature query values never reach a terminal, a log or ``rejects.jsonl``. ``show``
bounds what a message quotes of a value (a config's, a record's) to ~200 characters.
"""
import reprlib

from pipelines.infra.storage.redact import redact_text

SHOWN = 200  # characters of a value that a message quotes at most


def clip(text: str, limit: int = SHOWN) -> str:
    """``text`` cut to ``limit`` characters, with its full length when it was longer."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def show(value) -> str:
    """``repr(value)`` of at most ~``SHOWN`` characters: a longer string is cut, with its full
    length; a container is summarized level by level (``reprlib``), so a huge or alias-expanded
    value costs no more time than a small one."""
    if isinstance(value, str):
        if len(value) <= SHOWN:
            return repr(value)
        return f"{value[:SHOWN]!r}… ({len(value):,} characters)"  # the quotes say where it ends
    if isinstance(value, int) and value.bit_length() > 640:  # str() of > 4,300 digits raises
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    try:
        text = _REPR.repr(value)
    except ValueError:  # an integer of > 4,300 digits inside a container
        return f"a {type(value).__name__}"
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}… (a {type(value).__name__})"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


class FewtruncError(Exception):
    """Base of every error fewtrunc raises on purpose. Its text is redacted (user info and
    signatures of URLs) when it is made, so no copy of the message holds a secret."""

    def __init__(self, *args):
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))


class ConfigError(FewtruncError, ValueError):
    """A configuration key, value or file is wrong."""


class InputError(FewtruncError):
    """A bad input record or file. ``where`` is ``file`` or ``file:line``."""

    def __init__(self, where: str, reason: str):
        where, reason = redact_text(str(where)), redact_text(str(reason))
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class FatalError(FewtruncError):
    """A broken invariant: the run stops and nothing is published."""


class OutputError(FewtruncError):
    """The output directory is busy, damaged, foreign or not writable; says what to do."""
