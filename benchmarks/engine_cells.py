"""The parts of ``bench_engines_scale.py`` that are not cells and tables: its corpora, the wait
for an idle machine, and the CPU accounting of a run (its processes, and a Ray cluster's)."""
from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

COPY_UNIT_BYTES = 3_000_000  # one input unit per copy, as in a corpus of many files of >= it


class Corpus:
    """The input overrides of a run over the corpus, and over a one-file corpus (``small``)."""

    def __init__(self, args, tmp: Path):
        self.details = args.details
        if args.corpus:
            include = [g.strip() for g in args.include.split(",")]
            self.inputs = self._tree(args.corpus, include)
            first = next(p for p in sorted(Path(args.corpus).rglob("*")) if p.is_file()
                         and any(p.match(g) for g in include))
            (tmp / "small").mkdir()
            shutil.copy(first, tmp / "small" / first.name)
            self.small = self._tree(str(tmp / "small"), ["*"])
            self.name = f"{args.corpus} ({args.include})"
            return
        import zstandard
        from bench_pipeline import corpus_texts

        texts = corpus_texts()
        data = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
        blob = zstandard.ZstdCompressor(level=3).compress(data)
        files = []
        for i in range(args.copies):
            files.append(tmp / f"copy{i}.jsonl.zst")
            files[-1].write_bytes(blob)
        one = tmp / "small.jsonl.zst"
        one.write_bytes(zstandard.ZstdCompressor(level=3).compress(
            "".join(json.dumps({"text": t}) + "\n" for t in texts[:20]).encode()))
        self.inputs = self._files(files)
        self.small = self._files([one])
        self.name = f"{args.copies} copies of the pipeline benchmark's corpus"

    @staticmethod
    def _tree(root: str, include: list[str]) -> list[str]:
        return [f'input.paths=["{root}"]', "input.format=files", "input.exclude=[]",
                "input.include=[" + ",".join(f'"{g}"' for g in include) + "]",
                "input.max_documents=0"]

    @staticmethod
    def _files(files: list[Path]) -> list[str]:
        return ["input.paths=[" + ",".join(f'"{f}"' for f in files) + "]",
                f"input.unit_bytes={COPY_UNIT_BYTES}"]


def busy_cores(seconds: float = 3.0) -> float:
    """Cores busy on the whole machine over ``seconds`` (from /proc/stat)."""
    def sample():
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(f) - f[3] - f[4], sum(f)  # busy (all but idle, iowait), total
    b0, t0 = sample()
    time.sleep(seconds)
    b1, t1 = sample()
    return (b1 - b0) / max(1, t1 - t0) * os.cpu_count()


class Idle:
    """Waits before each cell until the rest of the machine is idle; keeps the load averages."""

    def __init__(self, cores: float, budget: float):
        self.cores, self.left, self.loads = cores, budget, []

    def wait(self) -> None:
        while (busy := busy_cores()) > self.cores and self.left > 0:
            print(f"    waiting: {busy:.2f} cores busy", file=sys.stderr)
            time.sleep(20)
            self.left -= 23
        self.loads.append(os.getloadavg()[0])


def children_cpu() -> float:
    """CPU seconds of this process's children that ended (a run and what it waited for)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class ClusterCpu:
    """CPU seconds of a Ray cluster's processes (daemons, actors) while a run lasts, sampled
    every 0.1 s from /proc (Ray reaps its workers without accounting their time to a parent)."""

    def __init__(self, cluster):
        self.cluster, self.first, self.last, self.daemons = cluster, {}, {}, 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        if cluster is not None:
            self._sample()
            self.first = dict(self.last)
            self.thread.start()

    def _sample(self) -> None:
        for pid in self.cluster.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            f = stat[stat.rfind(")") + 2 :].split()
            self.last[(pid, f[19])] = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def _loop(self) -> None:
        while not self.done.wait(0.1):
            self._sample()

    def stop(self) -> float:
        if self.cluster is None:
            return 0.0
        self.done.set()
        self.thread.join()
        self._sample()
        # the daemons (and any idle worker) were there before the run; actors start during it
        self.daemons = sum(v - self.first[k] for k, v in self.last.items() if k in self.first)
        return sum(v - self.first.get(k, 0.0) for k, v in self.last.items())


def marker_times(work: Path, launched: float) -> dict:
    """Seconds from launch to the first and last marker of each kind (``unit``, ``part``,
    ``shard``): when each stage's work started landing and ended, whatever the engine."""
    out = {}
    for kind in ("unit", "part", "shard"):
        times = sorted(p.stat().st_mtime - launched for p in work.glob(f"{kind}-*.done.json"))
        if times:
            out[kind] = (round(times[0], 2), round(times[-1], 2), len(times))
    return out
