"""Engines map the stages of ``pipelines.stages`` over work items (``pipelines.driver`` sequences
the run): ``local`` in this process, ``ray_engine`` on a pool of Ray actors (``ray_pool``, which
recovers lost workers itself; ``ray_node``, what a node checks before it works), ``beam_engine``
as one Beam pipeline. Each module's ``run(cfg, ...)`` is the entry point ``pipelines.api`` calls."""
