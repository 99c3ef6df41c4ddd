"""The mutants' vocabulary: ``Mutant`` and the test files that guard each part of the core
(``benchmarks/mutation_check.py`` runs them; the ``mutants_*.py`` files list them by area)."""
from __future__ import annotations

from typing import NamedTuple


def _pl(*names: str) -> list:
    return [f"tests/pipelines/test_pl_{n}.py" for n in names]


def _tr(*names: str) -> list:
    return [f"tests/training/test_tr_{n}.py" for n in names]


FAST_SUITE = ["tests/packing", "tests/pruning_data", "tests/pipelines/test_pl_bad_input.py",
              "tests/pipelines/test_pl_end_to_end.py", "tests/pipelines/test_pl_resume.py",
              "tests/pipelines/test_pl_spill.py", "tests/pipelines/test_pl_formats.py",
              "tests/pipelines/test_pl_reliability.py", "tests/pipelines/test_pl_exact_rules.py"]

KERNEL_SRC = "packing/_bfd_kernel.c"  # a mutant of it is compiled in the tree before its tests
PACKING = ["tests/packing"]
PRUNING = ["tests/pruning_data"]
EXACT, RELIABILITY, RESUME, E2E = _pl("exact_rules"), _pl("reliability"), _pl("resume"), \
    _pl("end_to_end")
PARTITIONS, DUPLICATES, FINISH = _pl("partitions"), _pl("duplicate_ids"), _pl("finish_checks")
SAFETY, HYGIENE, SCRATCH, SECRETS = _pl("output_safety"), _pl("store_hygiene"), _pl("scratch"), \
    _pl("secrets")
SPECIAL, JSONL, SPILL, FORMATS = _pl("special_inputs"), _pl("jsonl_damage"), _pl("spill"), \
    _pl("formats")
STORAGE = _pl("storage", "storage_output", "storage_run")
BITE_PL = _pl("driver_bite", "storage_bite", "steps_bite")
COLLATOR = _tr("hf_collator", "hf_inputs", "hf_boundaries", "hf_use_cache", "hf_bite")
PACK_DATASET = _tr("hf_pack_dataset", "hf_inputs", "hf_bite")
SHARD_CHECKS = _tr("shard_checks", "damaged_shards")
STREAMING = _tr("streaming_order", "streaming_reader", "streaming_state", "streaming_bite")


class Mutant(NamedTuple):
    name: str
    path: str  # the module, relative to the repository root
    old: str  # text that occurs exactly once in it
    new: str  # what it becomes
    tests: list  # pytest arguments: the test files (or node ids) that guard the module
    equivalent: str = ""  # why the edit changes no behaviour: listed, not run, not counted
