"""The Beam worker's side: one DoFn that runs any stage (imported only when a Beam job runs)."""
from __future__ import annotations

import threading
from concurrent.futures import Future

import apache_beam as beam

_AHEAD: dict = {}  # (stage name, parcel key) -> Future of the stage's call, set up ahead
_AHEAD_LOCK = threading.Lock()


def set_up_ahead(shell, key: str | None, path: str | None) -> None:
    """Set the stage up in this worker before its first item comes (a warm worker does, on a
    thread, while the runner still starts: ``beam_warm``); the first DoFn of the stage takes
    the result instead of setting it up again."""
    from pipelines.engines.parcel import from_file, join

    done: Future = Future()
    with _AHEAD_LOCK:
        _AHEAD[(shell.name, key)] = done
    try:
        done.set_result(join(shell, key, lambda: from_file(path)).setup(1))
    except BaseException as exc:  # noqa: BLE001 - raised where the DoFn takes it
        done.set_exception(exc)


class StageDoFn(beam.DoFn):
    """An item -> the stage's outputs (the next stage's items); for a ``gather`` stage the item
    is the list of every output before it. Holds the stage's shell; the run plan (``parcel``
    ``key``) comes as a side input, or from the file ``path`` on the DirectRunner
    (``beam_direct``), and is opened once per worker process. The stage is set up once per
    DoFn instance, on its first item (a side input is not there in ``setup``), unless it was
    set up ahead in this worker (``set_up_ahead``)."""

    def __init__(self, shell, key: str | None, path: str | None = None):
        self.shell, self.key, self.path = shell, key, path

    def setup(self):
        self.call = None

    def process(self, item, blob=None):
        if self.call is None:
            with _AHEAD_LOCK:
                ahead = _AHEAD.pop((self.shell.name, self.key), None)
            if ahead is not None:
                self.call = ahead.result()
            else:
                from pipelines.engines.parcel import from_blob, from_file, join

                stage = join(self.shell, self.key, lambda: from_blob(blob) if self.path is None
                             else from_file(self.path))
                self.call = stage.setup(1)  # the workers are the parallelism
        yield from self.call(item if self.shell.gather else [item])

