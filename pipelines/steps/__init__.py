"""Pure, engine-agnostic steps: plain objects in, plain Python/numpy/pyarrow objects out.

plan (sources -> units) -> read (unit -> TextBatch) -> tokenize (TextBatch -> TokenBatch) ->
spill (TokenBatch -> unit files) -> pack (document lengths -> RowPlan) -> write (rows -> shard) ->
stats/manifest/report. Engines (``pipelines.engines``) only schedule these; none of them knows
how many workers run it, so every engine produces the same bytes.
"""
