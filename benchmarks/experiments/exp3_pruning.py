"""Experiment 3 - dynamic data pruning (Attendu & Corbeil 2023) with EL2N, with the controls that
make its claims testable.

Data: sequences of the Markov chain of experiment 2 (confident states exact, the rest uniform over
8 successors). Two settings, both 2,000 training sequences, 5 epochs, batch 32:
  * noisy: 10% of the sequences replaced by uniformly random tokens. Arms at the pruned step
    budget: random 50%, EL2N keep-hardest 50%, EL2N 50% after an offset (several offsets; the
    one reported as "chosen" has the lowest loss on a clean *validation* split, never the known
    noise rate), full data for as many steps, and the known-clean 90% for as many steps (the
    best a noise filter could do); plus full data for all 5 epochs.
  * clean: no injected noise. EL2N keep 70% and 50% (no offset) against full data for all
    5 epochs, full data for the same steps, and random subsets of the same size - the data-diets
    claim is that EL2N holds accuracy on clean data.
Pruned arms train one full epoch, then re-score every example with the current model at every
epoch (``pruning.full_epochs=1``, ``rescore_every=1``; scoring time is included in the wall time).
Every arm runs with 3 training seeds (model init and batch order): losses are mean +- std, wall
times median and range. Test and validation sequences are clean and disjoint.
Run: python benchmarks/experiments/exp3_pruning.py   (about 6-8 minutes on 2 CPU cores)
"""
from __future__ import annotations

import itertools
import math
import tempfile
from pathlib import Path

import numpy as np

from common import RESULTS, MarkovSource, markdown_table, one_doc_rows, save, train_arm, write_rows
from pipelines.infra.plotting import pyplot, save_png
from training.data import DocumentCollator, ShardDataset
from training.evaluate import heldout_loss

V, LENGTH, N, N_VAL, N_TEST, NOISE, EPOCHS, BATCH = 64, 64, 2000, 300, 500, 0.10, 5, 32
SEEDS = (0, 1, 2)
RUN_NUMBER = itertools.count()
OFFSETS = (0.05, 0.1, 0.2)
MODEL = ["model.n_layers=2", "model.d_model=64", "model.n_heads=4", f"model.seq_len={LENGTH}",
         f"model.vocab_size={V}", f"data.batch_size={BATCH}", "train.lr=0.003", "train.warmup_steps=20",
         "train.log_every=10", "train.checkpoint_every=100000"]


def prune(keep: float, strategy: str = "el2n", offset: float = 0.0) -> list[str]:
    return ["pruning.enabled=true", f"pruning.keep_fraction={keep}", "pruning.full_epochs=1",
            "pruning.rescore_every=1", "pruning.unit=row", f"pruning.strategy={strategy}",
            f"pruning.offset_fraction={offset}"]


def steps_for(keep: float, n: int = N) -> int:
    per_epoch = math.ceil(n / BATCH)
    return per_epoch if keep >= 1 else per_epoch + (EPOCHS - 1) * math.ceil(int(keep * n) / BATCH)


def make_data(work: Path):
    src = MarkovSource(V, peak=1.0, seed=0)
    rng = np.random.default_rng(2)
    clean = src.sample(N, LENGTH, rng)
    noisy_mask = np.zeros(N, dtype=bool)
    noisy_mask[rng.choice(N, int(NOISE * N), replace=False)] = True
    noisy = clean.copy()
    noisy[noisy_mask] = rng.integers(V, size=(int(noisy_mask.sum()), LENGTH))
    val, test = src.sample(N_VAL, LENGTH, rng), src.sample(N_TEST, LENGTH, rng)
    dirs = {"noisy": write_rows(one_doc_rows(noisy), work / "noisy"),
            "clean": write_rows(one_doc_rows(clean), work / "clean"),
            "known_clean": write_rows(one_doc_rows(noisy[~noisy_mask]), work / "known-clean"),
            "val": write_rows(one_doc_rows(val), work / "val"),
            "test": write_rows(one_doc_rows(test), work / "test")}
    return src.true_loss(test), noisy_mask, dirs


def run(name, data_dir, steps, extra, seed, work, dirs, noisy_mask=None) -> dict:
    shares = {}
    ref = []

    def observe(step, batch, logits, stats):
        trainer = ref[0]
        epoch = trainer.sampler.epoch
        if noisy_mask is not None and trainer.subset is not None and epoch >= 1 and epoch not in shares:
            shares[epoch] = float(noisy_mask[trainer.subset(epoch)].mean())

    out = work / f"run-{next(RUN_NUMBER)}"  # a fresh directory per run (an existing one would resume)
    trainer, res = train_arm([f"data.dir={data_dir}", f"output.dir={out}", *MODEL, f"train.max_steps={steps}",
                              f"train.seed={seed}", f"data.seed={seed}", *extra],
                             step_callback=observe, on_build=ref.append)
    collate = DocumentCollator(True)
    val = heldout_loss(trainer.model, ShardDataset(dirs["val"]), collate, batch_size=64)
    test = heldout_loss(trainer.model, ShardDataset(dirs["test"]), collate, batch_size=64)
    noise = shares[max(shares)] if shares else None
    print(f"  seed {seed} {name}: {steps} steps, {res['wall_s']:.1f} s, val {val:.4f}, test {test:.4f}"
          + (f", noise kept {noise:.1%}" if noise is not None else ""), flush=True)
    return {"seconds": res["wall_s"], "val": val, "test": test, "noise_kept": noise}


def summarize(name, steps, runs, floor, full_seconds) -> dict:
    sec = np.array([r["seconds"] for r in runs])
    test = np.array([r["test"] for r in runs])
    val = np.array([r["val"] for r in runs])
    noise = [r["noise_kept"] for r in runs if r["noise_kept"] is not None]
    return {"arm": name, "steps": steps, "seconds_median": float(np.median(sec)), "seconds_min": float(sec.min()),
            "seconds_max": float(sec.max()), "time_saved": 1 - float(np.median(sec)) / full_seconds,
            "test_mean": float(test.mean()), "test_std": float(test.std(ddof=1)), "excess": float(test.mean() - floor),
            "val_mean": float(val.mean()), "noise_kept": float(np.mean(noise)) if noise else None, "runs": runs}


def setting(title, arms, floor, work, dirs, noisy_mask=None) -> list[dict]:
    print(f"{title}:", flush=True)
    raw = {name: [run(name, d, s, x, seed, work, dirs, noisy_mask) for seed in SEEDS] for name, (d, s, x) in arms.items()}
    full_seconds = float(np.median([r["seconds"] for r in raw["full data, 5 epochs"]]))
    return [summarize(name, arms[name][1], runs, floor, full_seconds) for name, runs in raw.items()]


def table(rows: list[dict], with_noise: bool) -> str:
    for r in rows:
        r["seconds_cell"] = f"{r['seconds_median']:.1f} ({r['seconds_min']:.1f}-{r['seconds_max']:.1f})"
        r["test_cell"] = f"{r['test_mean']:.4f} ± {r['test_std']:.4f}"
        r["noise_cell"] = "-" if r["noise_kept"] is None else f"{r['noise_kept']:.1%}"
    cols = [("arm", "arm", ""), ("steps", "steps", "d"), ("seconds_cell", "seconds, median (range)", ""),
            ("time_saved", "time saved (median)", ".0%"), ("val_mean", "validation loss", ".4f"),
            ("test_cell", "test loss, mean ± std", ""), ("excess", "excess over true chain", ".4f")]
    if with_noise:
        cols.append(("noise_cell", "noise in kept set", ""))
    return markdown_table(rows, cols)


def main() -> dict:
    work = Path(tempfile.mkdtemp(prefix="exp3-"))
    floor, noisy_mask, dirs = make_data(work)
    half, seventy = steps_for(0.5), steps_for(0.7)
    noisy_arms = {
        "full data, 5 epochs": (dirs["noisy"], steps_for(1.0) * EPOCHS, []),
        "full data, equal steps": (dirs["noisy"], half, []),
        "known-clean 90%, equal steps": (dirs["known_clean"], half, []),
        "random 50%": (dirs["noisy"], half, prune(0.5, "random")),
        "EL2N hardest 50% (offset 0)": (dirs["noisy"], half, prune(0.5)),
        **{f"EL2N 50%, offset {o:g}": (dirs["noisy"], half, prune(0.5, offset=o)) for o in OFFSETS},
    }
    noisy = setting("noisy (10% random sequences)", noisy_arms, floor, work, dirs, noisy_mask)
    el2n_rows = [r for r in noisy if r["arm"].startswith("EL2N")]
    chosen = min(el2n_rows, key=lambda r: r["val_mean"])
    chosen["arm"] += " (chosen on validation)"
    clean_arms = {
        "full data, 5 epochs": (dirs["clean"], steps_for(1.0) * EPOCHS, []),
        "full data, 70% steps": (dirs["clean"], seventy, []),
        "random 70%": (dirs["clean"], seventy, prune(0.7, "random")),
        "EL2N 70%": (dirs["clean"], seventy, prune(0.7)),
        "full data, 50% steps": (dirs["clean"], half, []),
        "random 50%": (dirs["clean"], half, prune(0.5, "random")),
        "EL2N 50%": (dirs["clean"], half, prune(0.5)),
    }
    clean = setting("clean (no injected noise)", clean_arms, floor, work, dirs)
    tables = {"noisy": table(noisy, True), "clean": table(clean, False)}
    print(f"\ntrue-chain floor {floor:.4f}; seeds {SEEDS}\n\nnoisy (10% random sequences):\n{tables['noisy']}"
          f"\n\nclean:\n{tables['clean']}")
    payload = {"examples": N, "noise_share": NOISE, "epochs": EPOCHS, "batch_size": BATCH, "seeds": SEEDS,
               "floor": floor, "chosen_offset_arm": chosen["arm"], "noisy": noisy, "clean": clean, "tables": tables}
    save("exp3_pruning", payload)
    plot(noisy, clean)
    return payload


def plot(noisy, clean):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, rows, title in ((axes[0], noisy, "10% noisy sequences"), (axes[1], clean, "clean data")):
        names = [r["arm"] for r in rows]
        ax.barh(names, [r["excess"] for r in rows], xerr=[r["test_std"] for r in rows], color="tab:blue")
        ax.set(xlabel="test loss - true chain (mean ± std, 3 seeds)", title=title)
        ax.invert_yaxis()
    fig.tight_layout()
    save_png(fig, RESULTS / "exp3_pruning.png")


if __name__ == "__main__":
    main()
