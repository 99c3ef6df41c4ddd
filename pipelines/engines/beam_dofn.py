"""The Beam worker's side: one DoFn that runs any stage (imported only when a Beam job runs)."""
from __future__ import annotations

import apache_beam as beam


class StageDoFn(beam.DoFn):
    """An item -> the stage's outputs (the next stage's items); for a ``gather`` stage the item
    is the list of every output before it. Holds the stage's shell; the run plan comes as a
    side input (``parcel``), opened once per worker process, and the stage is set up once per
    DoFn instance, on its first item (a side input is not there in ``setup``)."""

    def __init__(self, shell, key: str | None):
        self.shell, self.key = shell, key

    def setup(self):
        self.call = None

    def process(self, item, blob=None):
        if self.call is None:
            from pipelines.engines.parcel import from_blob, join

            stage = join(self.shell, self.key, lambda: from_blob(blob))
            self.call = stage.setup(1)  # the workers are the parallelism
        yield from self.call(item if self.shell.gather else [item])
