"""Engines map the stages of ``pipelines.stages`` over work items (``pipelines.driver`` sequences
the run): ``local`` in this process, ``ray_engine`` on a pool of Ray actors, ``beam_engine`` as
one Beam pipeline. Each module's ``run(cfg, ...)`` is the entry point ``pipelines.api`` calls."""
