"""Mutation check: does the test suite catch plausible one-line bugs in the core modules?

Each mutant is one small edit of a shipped module (a flipped comparison, a skipped fsync, a
wrong tie-break, a missing check) that a careless change could make. For each, this script
builds a copy of the tree in a temporary directory (the committed tree, ``git archive HEAD``, by
default: edits in progress do not disturb it), applies the edit there, runs the test files that
guard the mutated module and counts the mutant as *caught* when a test fails (or the run hangs
past ``--timeout``); the first failing test is printed. A run that errors before any test (a
collection error, no test selected) counts as neither: it is reported, as is a mutant whose text
is no longer exactly once in its module (*stale*: the report names the list that holds it and,
when a module moved, the module that now holds the text, so only its ``path`` needs updating).

Each mutant runs against its own test files only, so "caught" here is a lower bound of "the
whole suite catches it" (``--suite`` runs the fast suite instead: slower, and still not every
file). Before the mutants, the guards run once on the unmutated tree: they must pass. Mutants
marked ``equivalent`` change no behaviour (the reason is given); they are listed and not run or
counted. The mutants are listed by area in ``mutants_core.py`` (``packing/``, its compiled
kernel, whose mutants are compiled in the tree, and ``pruning_data/``), ``mutants_run.py`` (the
driver, resume, partitions, duplicates, work directory, atomic writes,
``pipelines/infra/storage/``), ``mutants_steps.py`` (``pipelines/steps/`` and the manifest
checks of ``pipelines/infra/manifest.py``) and ``mutants_training.py``; their guards are named
in ``mutation_guards.py``. The table's areas follow the mutated module's path (``AREAS``).

    python benchmarks/mutation_check.py                 # every mutant of the committed tree
    python benchmarks/mutation_check.py --worktree      # the working tree (uncommitted tests too)
    python benchmarks/mutation_check.py --only bfd,ffd  # mutants whose name contains "bfd" or "ffd"
    python benchmarks/mutation_check.py --area storage  # one area (see --list)
    python benchmarks/mutation_check.py --check         # only report stale mutants (no tests)
    python benchmarks/mutation_check.py --without-bite  # as if no tests/**/*_bite.py existed
    python benchmarks/mutation_check.py --list

The compiled BFD kernel (``packing/_bfd_kernel*.so``, not tracked) is copied into the tree from
this checkout, so the tests run as a user's would. The whole set takes 25-50 minutes on 2
shared cores: run it by hand (``nice``, one ``--area`` at a time), outside CI, after changing a
core module. Target: at least 90% caught.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import mutants_core
import mutants_run
import mutants_steps
import mutants_training
from mutation_guards import FAST_SUITE, KERNEL_SRC, Mutant

ROOT = Path(__file__).resolve().parent.parent
LISTS = (mutants_core, mutants_run, mutants_steps, mutants_training)
MUTANTS = [m for lst in LISTS for m in lst.MUTANTS]
LISTED_IN = {m.name: f"benchmarks/{lst.__name__}.py" for lst in LISTS for m in lst.MUTANTS}
BITE = "_bite.py"  # the targeted tests of mutation-prone edges; ``--without-bite`` leaves them out
SHIPPED = ("packing", "pipelines", "pruning_data", "training")  # where a moved text is looked for

AREAS = (  # (area, path prefixes), first match wins
    ("packing", ("packing/",)),
    ("pruning_data", ("pruning_data/",)),
    ("storage", ("pipelines/infra/storage/",)),
    ("steps", ("pipelines/steps/",)),
    ("run (driver, partitions, atomic)", ("pipelines/",)),
    ("training", ("training/",)),
)


def area_of(m: Mutant) -> str:
    return next(a for a, prefixes in AREAS if m.path.startswith(prefixes))


def _extract_head(dest: Path) -> None:
    """The committed tree (``git archive HEAD``) into ``dest``."""
    data = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT,
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def _copy_worktree(dest: Path) -> None:
    """Tracked and untracked (not ignored) files of the working tree into ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def build_tree(dest: Path, worktree: bool) -> None:
    (_copy_worktree if worktree else _extract_head)(dest)
    for so in (ROOT / "packing").glob("_bfd_kernel*.so"):  # built by pip install, not tracked
        shutil.copy2(so, dest / "packing" / so.name)


def _kernels(tree: Path) -> list[Path]:
    return sorted((tree / "packing").glob("_bfd_kernel*.so"))


def _build_kernel(tree: Path) -> str:
    """Compile the (mutated) kernel in place, the original kept aside; "" or why it failed."""
    if not _kernels(tree):
        return "no compiled kernel in this checkout to compare with"
    for so in _kernels(tree):
        shutil.copy2(so, so.with_name(so.name + ".orig"))
    code = ("from setuptools import setup, Extension; setup(name='k', script_args=['-q', "
            "'build_ext', '--inplace'], ext_modules=[Extension('packing._bfd_kernel', "
            f"['{KERNEL_SRC}'])])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True)
    return "" if proc.returncode == 0 else f"the kernel does not compile: {proc.stderr[-200:]}"


def _restore_kernel(tree: Path) -> None:
    for orig in (tree / "packing").glob("_bfd_kernel*.so.orig"):
        os.replace(orig, orig.with_name(orig.name.removesuffix(".orig")))


def _present(tree: Path, args: list) -> list:
    """``args`` without the test files that are not in ``tree`` (a guard added later)."""
    return [a for a in args if not a.startswith("tests/") or (tree / a.split("::")[0]).exists()]


def _pytest(tree: Path, args: list, timeout: int, without_bite=False) -> tuple[str, str]:
    """("failed" | "passed" | "error" | "timeout", pytest's last line and the test that failed).
    ``without_bite``: no ``*_bite.py`` file runs (what the suite caught before them)."""
    args = _present(tree, args)
    if without_bite:
        args = [a for a in args if BITE not in a.split("::")[0]] + [f"--ignore-glob=*{BITE}"]
    if not any(a.startswith("tests/") for a in args):
        if without_bite:
            return "passed", f"no guard but {BITE} files"
        return "error", "none of its test files is in the tree"
    if "-k" not in args:  # the short targeted files first: with -x a caught mutant stops sooner
        args = sorted(args, key=lambda a: "_bite" not in a)
    # serial (-n 0 overrides the suite's xdist addopts): -x then stops at the first failure,
    # where an interrupted xdist session exits 2 ("error"), not 1
    serial = ["-n", "0"] if importlib.util.find_spec("xdist") else []
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", *serial, "-p", "no:randomly", "-p",
           "no:cacheprovider", "-m", "not slow", *args]
    try:
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except subprocess.TimeoutExpired:
        return "timeout", f"no result after {timeout} s"
    lines = (proc.stdout.strip() or proc.stderr.strip() or "?").splitlines()
    failed = next((ln[7:].split(" - ")[0] for ln in lines if ln.startswith("FAILED ")), "")
    # 1: a test failed; 0: all passed; anything else (collection error, nothing selected,
    # usage error) says nothing about the mutant
    verdict = {0: "passed", 1: "failed"}.get(proc.returncode, "error")
    return verdict, lines[-1] + (f"; by {failed}" if failed else "")


def stale(tree: Path, mutants: list[Mutant]) -> dict[str, str]:
    """{name: why it no longer applies}: its module is gone, or its ``old`` text is not in it
    exactly once; when the text is now once in another shipped module (a module moved or
    renamed), that module is named, so only the mutant's path needs updating."""
    out, sources = {}, None
    for m in mutants:
        path = tree / m.path
        count = path.read_text().count(m.old) if path.is_file() else -1
        if count == 1:
            continue
        if sources is None:
            sources = {p.relative_to(tree).as_posix(): p.read_text() for d in SHIPPED
                       for p in sorted((tree / d).rglob("*")) if p.suffix in (".py", ".c")}
        moved = [rel for rel, text in sources.items() if rel != m.path and text.count(m.old) == 1]
        why = (f"{m.path} does not exist" if count < 0 else
               f"its text is {'not' if count == 0 else f'{count} times'} in {m.path}")
        out[m.name] = why + (f"; it is once in {', '.join(moved)}: update its path" if moved
                             else "; update its old text (and path) with the module")
    return out


def report_stale(bad: dict[str, str]) -> None:
    for name, why in sorted(bad.items()):
        print(f"STALE    {name} ({LISTED_IN[name]}): {why}", flush=True)


def run(mutants: list[Mutant], suite: bool, timeout: int, worktree: bool, baseline: bool,
        without_bite: bool) -> int:
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="fewtrunc-mutants-") as tmp:
        tree = Path(tmp)
        build_tree(tree, worktree)
        bad = stale(tree, mutants)
        report_stale(bad)
        todo = [m for m in mutants if m.name not in bad and not m.equivalent]
        if baseline and todo:  # the guards pass on the unmutated tree, or "caught" means nothing
            files = sorted({a for m in todo for a in (FAST_SUITE if suite else m.tests)
                            if a.startswith("tests/")})
            t0 = time.perf_counter()
            verdict, last = _pytest(tree, files, timeout * 4, without_bite)
            print(f"baseline {verdict}: {last} ({time.perf_counter() - t0:.0f} s)", flush=True)
            if verdict != "passed":
                print("the guards fail without any mutant: fix them first")
                return 2
        for m in todo:
            path = tree / m.path
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            t0 = time.perf_counter()
            try:
                built = _build_kernel(tree) if m.path.endswith(".c") else ""
                verdict, last = ("error", built) if built else _pytest(
                    tree, FAST_SUITE if suite else m.tests, timeout, without_bite)
            finally:
                path.write_text(original)
                if m.path.endswith(".c"):
                    _restore_kernel(tree)
            results[m.name] = {"failed": "caught", "timeout": "caught", "passed": "SURVIVED"}.get(
                verdict, "ERROR")
            print(f"{results[m.name]:8} {m.name} ({time.perf_counter() - t0:.0f} s; {last})",
                  flush=True)
    counted = [m for m in mutants if m.name in results and results[m.name] != "ERROR"]
    table(counted, results)
    equivalent = [m.name for m in mutants if m.equivalent]
    errors = [n for n, r in results.items() if r == "ERROR"]
    print(f"equivalent (not counted): {equivalent or 'none'}; errors: {errors or 'none'}; "
          f"stale: {sorted(bad) or 'none'}")
    caught = sum(results[m.name] == "caught" for m in counted)
    return 0 if counted and caught >= 0.9 * len(counted) and not bad and not errors else 1


def table(counted: list[Mutant], results: dict) -> None:
    per_area, caught = Counter(), Counter()
    for m in counted:
        per_area[area_of(m)] += 1
        caught[area_of(m)] += results[m.name] == "caught"
    print("\n| area | caught / mutants |\n|---|---|")
    for area, _ in AREAS:
        if per_area[area]:
            print(f"| {area} | {caught[area]} / {per_area[area]} |")
    total, got = sum(per_area.values()), sum(caught.values())
    print(f"| **all** | **{got} / {total} ({got / max(total, 1):.0%})** |")
    survivors = [m.name for m in counted if results[m.name] != "caught"]
    print(f"survivors: {survivors or 'none'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worktree", action="store_true",
                    help="mutate a copy of the working tree (default: the committed tree)")
    ap.add_argument("--suite", action="store_true", help="run the fast suite for every mutant")
    ap.add_argument("--only", default="", help="mutants whose name contains this (or one of "
                    "these, comma-separated)")
    ap.add_argument("--area", default="", help="mutants of the areas whose name starts so")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--check", action="store_true", help="only report stale mutants")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the run of the guards on the unmutated tree")
    ap.add_argument("--without-bite", action="store_true", help=f"run no *{BITE} test (what "
                    "the suite caught before them; a mutant they alone guard survives)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per mutant")
    args = ap.parse_args()
    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), "mutant names must be unique"
    wanted = args.only.split(",")
    mutants = [m for m in MUTANTS if any(w in m.name for w in wanted)
               and area_of(m).startswith(args.area)]
    if args.list:
        for m in mutants:
            note = f"  (equivalent: {m.equivalent})" if m.equivalent else ""
            print(f"{m.name:40} {area_of(m):12.12} {m.path}{note}")
        print(f"{len(mutants)} mutants")
        return 0
    if args.check:
        with tempfile.TemporaryDirectory(prefix="fewtrunc-mutants-") as tmp:
            build_tree(Path(tmp), args.worktree)
            bad = stale(Path(tmp), mutants)
        report_stale(bad)
        print(f"{len(mutants) - len(bad)} of {len(mutants)} mutants apply; stale: "
              f"{sorted(bad) or 'none'}")
        return 1 if bad else 0
    return run(mutants, args.suite, args.timeout, args.worktree, not args.no_baseline,
               args.without_bite)


if __name__ == "__main__":
    sys.exit(main())
