"""Engines map the stages of ``pipelines.stages`` over work items (``pipelines.driver`` sequences
the run and is handed the engine): ``local`` in this process, ``ray_engine`` on a pool of Ray
actors (``ray_pool``, which recovers lost workers itself; ``ray_node``, what a node checks before
it works), ``beam_engine`` as one Beam pipeline. ``registry`` names them for ``pipelines.api``,
which builds one (``base.EngineBase``) and hands it to the driver; the contract is
``pipelines.contracts.Engine``."""
