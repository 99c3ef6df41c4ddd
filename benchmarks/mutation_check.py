"""Mutation check: does the test suite catch single-point faults in the core modules?

Each mutant below is one small edit (a flipped comparison, a skipped fsync, a wrong tie-break)
of ``packing/``, ``pipelines/steps/``, ``atomic.py``, ``shard_format.py`` or the run's driver
(``driver``, ``stages``, ``resume``, ``finish``). For each, this script copies the working tree
to a temporary directory, applies the edit there (the checkout is never touched), runs the tests
and counts the mutant as *caught* when they fail.

    python benchmarks/mutation_check.py                 # every mutant, its own test files
    python benchmarks/mutation_check.py --suite         # every mutant against the fast suite
    python benchmarks/mutation_check.py --only bfd      # mutants whose name contains "bfd"
    python benchmarks/mutation_check.py --list

It takes minutes per mutant with ``--suite`` (tens of minutes in all): run it by hand, outside
CI, after changing a core module. Target: at least 90% caught. A mutant whose text no longer
matches its module is reported as stale (update its ``old`` text).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
FAST_SUITE = ["tests/packing", "tests/pipelines/test_pl_bad_input.py",
              "tests/pipelines/test_pl_end_to_end.py", "tests/pipelines/test_pl_resume.py",
              "tests/pipelines/test_pl_spill.py", "tests/pipelines/test_pl_formats.py",
              "tests/pipelines/test_pl_reliability.py", "tests/pipelines/test_pl_exact_rules.py"]
PACKING = ["tests/packing"]
EXACT = ["tests/pipelines/test_pl_exact_rules.py"]
RELIABILITY = ["tests/pipelines/test_pl_reliability.py"]


class Mutant(NamedTuple):
    name: str
    path: str
    old: str
    new: str
    tests: list


MUTANTS = [
    # packing
    Mutant("bfd-add-at", "packing/bfd.py",
           "np.add.at(gcount, full - per_bin[: full.size] * s, moved)",
           "gcount[full - per_bin[: full.size] * s] += moved", PACKING),
    Mutant("bfd-newest-bin-first", "packing/bfd.py",
           "        group[dest].extend(ids_list)", "        group[dest][:0] = ids_list", PACKING),
    Mutant("obfd-newest-bin-first", "packing/obfd.py",
           "b = bins_with_room[r].popleft()", "b = bins_with_room[r].pop()", PACKING),
    Mutant("obfd-worst-fit", "packing/obfd.py",
           "i = 2 * i if tree[2 * i] >= s else 2 * i + 1",
           "i = 2 * i + 1 if tree[2 * i + 1] >= s else 2 * i", PACKING),
    Mutant("split-count", "packing/split.py",
           "np.count_nonzero(self.chunk == 1)", "np.count_nonzero(self.chunk >= 1)", PACKING),
    Mutant("buffered-round-trigger", "packing/online.py",
           "if self.buffered_tokens >= self.buffer_tokens:",
           "if self.buffered_tokens > self.buffer_tokens:", PACKING),
    Mutant("buffered-carry-rule", "packing/online.py",
           "carried = low[np.cumsum(fills[low]) <= self.buffer_tokens // 2]",
           "carried = low[np.cumsum(fills[low]) < self.buffer_tokens // 2]", PACKING),
    Mutant("row-segments-reversed", "packing/result.py",
           'return np.argsort(self.assignment, kind="stable")',
           "return np.lexsort((-np.arange(self.assignment.size), self.assignment))",
           PACKING + EXACT),
    Mutant("capacity-limit", "packing/validate.py",
           "if capacity > MAX_CAPACITY:", "if capacity > MAX_CAPACITY * 8:",
           PACKING + RELIABILITY),
    # spill
    Mutant("spill-marker-first", "pipelines/steps/spill.py",
           '        os.replace(self.tmp, _name(self.work, self.unit, "tokens"))\n',
           '        write_json(_name(self.work, self.unit, "done.json"), {})\n'
           '        os.replace(self.tmp, _name(self.work, self.unit, "tokens"))\n', EXACT),
    Mutant("spill-fsync-skipped", "pipelines/steps/spill.py",
           "        os.fsync(self.f.fileno())\n        self.f.close()",
           "        self.f.close()", EXACT),
    Mutant("spill-runs-across-units", "pipelines/steps/spill.py",
           "new_run[1:] = (u[1:] != u[:-1]) | (s[1:] != s[:-1] + n[:-1])",
           "new_run[1:] = s[1:] != s[:-1] + n[:-1]", EXACT),
    Mutant("atomic-fsync-skipped", "pipelines/atomic.py",  # markers, manifest, shards
           "        if sync:\n            fsync_path(tmp)", "        if False:\n            fsync_path(tmp)",
           EXACT),
    # shards
    Mutant("written-in-place", "pipelines/atomic.py",  # no temporary name for any file
           "    tmp = temp_name(path, suffix)\n    try:", "    tmp = path\n    try:",
           ["tests/pipelines/test_pl_resume.py"] + EXACT),
    Mutant("resume-skips-sha256", "pipelines/stages.py",
           'if entry["rows"] == end - start and sha256_file(path) == entry["sha256"]:',
           'if entry["rows"] == end - start:', EXACT),
    Mutant("stale-shard-kept", "pipelines/row_plan.py",
           "        if extra.name not in planned:\n            extra.unlink()",
           "        if extra.name not in planned:\n            pass", RELIABILITY),
    Mutant("rerun-trusts-manifest", "pipelines/resume.py",
           "        damage = output_damage(out, manifest, check)",
           "        damage = []", RELIABILITY),
    # read
    Mutant("jsonl-size-limit", "pipelines/steps/read_jsonl.py",
           "if too_long or size > max_bytes:", "if too_long or size >= max_bytes:", EXACT),
    Mutant("jsonl-pending-limit", "pipelines/steps/read_jsonl.py",
           "if pending_size > max_bytes:", "if pending_size >= max_bytes:", EXACT),
    Mutant("gzip-first-member-only", "pipelines/steps/read_jsonl.py",
           "                data = d.unused_data + data[end:] or f.read(CHUNK)\n"
           "                break\n            data = f.read(CHUNK)\n            if not data:\n"
           '                raise EOFError("gzip',
           "                data = b''\n"
           "                break\n            data = f.read(CHUNK)\n            if not data:\n"
           '                raise EOFError("gzip', EXACT),
    Mutant("jsonl-last-line-dropped", "pipelines/steps/read_jsonl.py",
           "    if pending_size:\n        number += 1", "    if False:\n        number += 1",
           EXACT),
    Mutant("gzip-no-salvage", "pipelines/steps/read_jsonl.py",
           "                    yield from _salvage(before, piece)  # raises at the damaged byte",
           "                    pass", RELIABILITY),
    Mutant("max-documents-off-by-one", "pipelines/steps/read.py",
           "if limit and n >= limit:", "if limit and n > limit:", EXACT),
    Mutant("surrogate-accepted", "pipelines/steps/read.py",
           "    if not text.isascii():", "    if False:", RELIABILITY),
    Mutant("no-tokens-not-recorded", "pipelines/steps/tokenize.py",
           '            batch.rejects.extend({"doc_id": int(doc_ids[i]), "reason": "no tokens"} '
           "for i in empty)", "            pass", EXACT),
    Mutant("text-size-limit", "pipelines/steps/read.py",
           "        if size > cfg.max_document_bytes:", "        if size >= cfg.max_document_bytes:",
           EXACT),
    Mutant("file-size-limit", "pipelines/steps/read_files.py",
           "    if size > cfg.max_document_bytes:", "    if size >= cfg.max_document_bytes:", EXACT),
    Mutant("unit-boundary", "pipelines/steps/plan.py",
           'if current and (src.format == "hf" or size + src.size > unit_bytes):',
           'if current and (src.format == "hf" or size + src.size >= unit_bytes):', EXACT),
    Mutant("digest-without-size", "pipelines/steps/plan.py",
           'line = f"{unit.index}\\0{s.key}\\0{s.format}\\0{s.size}\\n"',
           'line = f"{unit.index}\\0{s.key}\\0{s.format}\\n"', EXACT),
    Mutant("finalize-skips-conservation", "pipelines/finish.py",
           '    if not all(manifest["checks"].values()) or t["sequences"] != rows.n_rows:',
           "    if False:", EXACT),
    Mutant("shard-ranges-short", "pipelines/steps/write.py",
           "return [(s, min(s + rows_per_shard, n_rows)) for s in range(0, n_rows, rows_per_shard)]",
           "return [(s, min(s + rows_per_shard, n_rows - 1)) for s in range(0, n_rows, "
           "rows_per_shard)]", EXACT),
    # verify
    Mutant("verify-row-length", "pipelines/steps/verify.py",
           "if (ids_len > seq_len).any():", "if (ids_len >= seq_len).any():", EXACT),
    Mutant("verify-skips-sha256", "pipelines/steps/verify.py",
           '        if sha256_file(path) != entry["sha256"]:\n            problems.append(f"{entry',
           '        if False:\n            problems.append(f"{entry',
           ["tests/pipelines/test_pl_end_to_end.py"]),
    Mutant("verify-early-return", "pipelines/steps/verify.py",
           "    seg = np.diff(lens_off)\n",
           "    return problems, int(ids_len.sum())\n    seg = np.diff(lens_off)\n", EXACT),
    Mutant("verify-skips-tokens-in", "pipelines/steps/verify.py",
           'or totals.get("tokens_out") != totals.get("tokens_in"):', ":", EXACT),
    Mutant("verify-skips-seal", "pipelines/steps/verify.py",
           '    elif manifest["seal"] != manifest_seal(manifest):',
           "    elif False:", RELIABILITY),
    Mutant("manifest-path-traversal", "pipelines/steps/verify.py",
           "if not isinstance(name, str) or not SHARD_FILE.fullmatch(name):",
           "if not isinstance(name, str):", RELIABILITY),
]


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def run(mutants: list[Mutant], suite: bool, timeout: int) -> int:
    caught, survived, stale = [], [], []
    with tempfile.TemporaryDirectory(prefix="fewtrunc-mutants-") as tmp:
        tree = Path(tmp)
        _copy_tree(tree)
        for m in mutants:
            path = tree / m.path
            original = path.read_text()
            if original.count(m.old) != 1:
                stale.append(m.name)
                print(f"STALE    {m.name}: its text is not (once) in {m.path}", flush=True)
                continue
            path.write_text(original.replace(m.old, m.new))
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow",
                     *(FAST_SUITE if suite else m.tests)],
                    cwd=tree, capture_output=True, text=True, timeout=timeout,
                    env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
                failed = proc.returncode != 0
            except subprocess.TimeoutExpired:
                failed = True  # a hang is caught too
            finally:
                path.write_text(original)
            (caught if failed else survived).append(m.name)
            print(f"{'caught  ' if failed else 'SURVIVED'} {m.name} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    total = len(caught) + len(survived)
    print(f"\n{len(caught)} of {total} mutants caught ({len(caught) / max(total, 1):.0%}); "
          f"survivors: {survived or 'none'}; stale: {stale or 'none'}")
    return 0 if total and len(caught) >= 0.9 * total else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", action="store_true", help="run the fast suite for every mutant")
    ap.add_argument("--only", default="", help="mutants whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per mutant")
    args = ap.parse_args()
    mutants = [m for m in MUTANTS if args.only in m.name]
    if args.list:
        for m in mutants:
            print(f"{m.name:28} {m.path}")
        return 0
    return run(mutants, args.suite, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
