"""Experiment 3 - dynamic data pruning (Attendu & Corbeil 2023) with EL2N, with 10% noisy examples.

Data: 2,000 sequences of the Markov chain of experiment 2 (confident states exact, the rest
uniform over 8 successors); 10% of them are replaced by uniformly random tokens (noise). Arms:
full data; EL2N keep-hardest 50%; EL2N keep 50% after skipping the hardest 10% (offset); a random
50% subset. Pruned arms train one full epoch, then re-score every example with the current model
at every epoch (``pruning.full_epochs=1``, ``rescore_every=1``; the scoring passes are included
in the wall time). The table shows the steps and time used, the clean held-out loss and the share
of noise in the kept set (the last re-scoring; base rate 10%).
Run: python benchmarks/experiments/exp3_pruning.py   (about 2-3 minutes on 2 CPU cores)
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from common import RESULTS, MarkovSource, markdown_table, one_doc_rows, save, train_arm, write_rows
from pipelines.plotting import pyplot, save_png
from training.data import DocumentCollator, ShardDataset
from training.evaluate import heldout_loss

V, LENGTH, N, N_HELD, NOISE, EPOCHS, BATCH, KEEP = 64, 64, 2000, 500, 0.10, 5, 32, 0.5
MODEL = ["model.n_layers=2", "model.d_model=64", "model.n_heads=4", f"model.seq_len={LENGTH}",
         f"model.vocab_size={V}", f"data.batch_size={BATCH}", "train.lr=0.003", "train.warmup_steps=20",
         "train.log_every=10", "train.checkpoint_every=100000"]
PRUNE = ["pruning.enabled=true", f"pruning.keep_fraction={KEEP}", "pruning.full_epochs=1",
         "pruning.rescore_every=1", "pruning.unit=row"]
ARMS = {
    "full data": [],
    "EL2N keep hardest 50%": [*PRUNE, "pruning.strategy=el2n", "pruning.offset_fraction=0"],
    "EL2N 50% after a 10% offset": [*PRUNE, "pruning.strategy=el2n", "pruning.offset_fraction=0.1"],
    "random 50%": [*PRUNE, "pruning.strategy=random"],
}


def main() -> dict:
    src = MarkovSource(V, peak=1.0, seed=0)
    rng = np.random.default_rng(2)
    seqs = src.sample(N, LENGTH, rng)
    noisy = np.zeros(N, dtype=bool)
    noisy[rng.choice(N, int(NOISE * N), replace=False)] = True
    seqs[noisy] = rng.integers(V, size=(int(noisy.sum()), LENGTH))
    held = src.sample(N_HELD, LENGTH, rng)
    work = Path(tempfile.mkdtemp(prefix="exp3-"))
    train_dir = write_rows(one_doc_rows(seqs), work / "train")
    held_dir = write_rows(one_doc_rows(held), work / "heldout")
    floor = src.true_loss(held)
    full_steps = EPOCHS * math.ceil(N / BATCH)
    pruned_steps = math.ceil(N / BATCH) + (EPOCHS - 1) * math.ceil(int(KEEP * N) / BATCH)
    results = []
    for name, extra in ARMS.items():
        shares = {}

        def observe(step, batch, logits, stats):
            epoch = trainer_ref[0].sampler.epoch
            if trainer_ref[0].subset is not None and epoch >= 1 and epoch not in shares:
                kept = trainer_ref[0].subset(epoch)
                shares[epoch] = float(noisy[kept].mean())

        trainer_ref = []
        steps = full_steps if not extra else pruned_steps
        trainer, res = train_arm([f"data.dir={train_dir}", f"output.dir={work / f'arm{len(results)}'}",
                                  *MODEL, f"train.max_steps={steps}", *extra],
                                 step_callback=observe, on_build=trainer_ref.append)
        wall = res["wall_s"]
        loss = heldout_loss(trainer.model, ShardDataset(held_dir), DocumentCollator(True), batch_size=64)
        last = shares[max(shares)] if shares else NOISE
        results.append({"arm": name, "steps": steps, "wall_s": wall, "heldout_loss": loss,
                        "excess": loss - floor, "noise_share_kept": last,
                        "noise_share_by_epoch": shares, "rescorings": len(trainer.rescored_epochs)})
        print(f"{name}: {steps} steps, {wall:.0f} s, held-out {loss:.4f}, noise kept {last:.1%}", flush=True)
    base = results[0]
    for r in results:
        r["steps_saved"] = 1 - r["steps"] / base["steps"]
        r["time_saved"] = 1 - r["wall_s"] / base["wall_s"]
    table = markdown_table(results, [
        ("arm", "arm", ""), ("steps", "steps", "d"), ("steps_saved", "steps saved", ".0%"),
        ("wall_s", "seconds", ".0f"), ("time_saved", "time saved", ".0%"),
        ("heldout_loss", "clean held-out loss", ".4f"), ("excess", "excess over true chain", ".4f"),
        ("noise_share_kept", "noise in kept set", ".1%")])
    print(f"true-chain floor {floor:.4f}; noise base rate {NOISE:.0%}\n{table}")
    payload = {"examples": N, "noise_share": NOISE, "epochs": EPOCHS, "batch_size": BATCH,
               "keep_fraction": KEEP, "floor": floor,
               "results": [{**r, "noise_share_by_epoch": {str(k): v for k, v in r["noise_share_by_epoch"].items()}}
                           for r in results], "table": table}
    save("exp3_pruning", payload)
    plot(results)
    return payload


def plot(results):
    plt = pyplot()

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    names = [r["arm"] for r in results]
    a.barh(names, [r["excess"] for r in results], color="tab:blue")
    a.set(xlabel="clean held-out loss - true chain (lower is better)", title="held-out loss")
    a.invert_yaxis()
    b.barh(names, [r["noise_share_kept"] for r in results], color="tab:red")
    b.axvline(0.10, color="k", ls="--", lw=1)
    b.set(xlabel="share of noisy examples in the kept set (dashed: base rate)", title="kept-set composition")
    b.invert_yaxis()
    fig.tight_layout()
    save_png(fig, RESULTS / "exp3_pruning.png")


if __name__ == "__main__":
    main()
