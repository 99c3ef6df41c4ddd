"""The Beam worker's side: one DoFn that runs any stage (imported only when a Beam job runs)."""
from __future__ import annotations

import apache_beam as beam


class StageDoFn(beam.DoFn):
    """An item -> the stage's outputs (the next stage's items); for a ``gather`` stage the item
    is the list of every output before it. Set up once per DoFn instance."""

    def __init__(self, stage):
        self.stage = stage

    def setup(self):
        self.call = self.stage.setup(1)  # the workers are the parallelism

    def process(self, item):
        yield from self.call(item if self.stage.gather else [item])
