"""Experiment 2 - noise robustness: MLE vs loss truncation vs ENT-threshold vs ENT-fraction.

Data: a random Markov chain over 64 tokens (``common.MarkovSource``): 60% of the states have one
successor with probability ``peak``, the others a uniform choice among 8 successors - so many
*clean* targets are high-entropy. Two settings: peak=1.0 (the confident states are exact, so a
confidently wrong target is always noise) and peak=0.97 (3% genuine rare events, which a
truncation rule can mistake for noise). Half of the training sequences are noisy: each of their tokens is replaced by a
uniformly random token with probability 0.5. Held-out sequences are clean; the floor is the true
chain's cross-entropy. Every arm: same model, seed, batches and steps; only loss.kind differs.
Besides held-out loss, the table shows *what* each method dropped: the share of corrupted targets
dropped (recall) and the share of clean high-entropy targets dropped (what a loss-based rule
cannot spare and ENT should).
Drop shares are counted after the ENT warmup / loss-truncation hot start (steps > 100).
Run: python benchmarks/experiments/exp2_noise.py   (about 3-4 minutes on 2 CPU cores)
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from common import (RESULTS, MarkovSource, markdown_table, one_doc_rows, save, train_arm, write_rows)
from pipelines.plotting import pyplot, save_png
from training.data import DocumentCollator, ShardDataset
from training.evaluate import heldout_loss

V, LENGTH, N_TRAIN, N_HELD, NOISY_SHARE, TOKEN_NOISE = 64, 64, 4000, 500, 0.5, 0.5
STEPS, BATCH, WARMUP = 500, 32, 100
MODEL = ["model.n_layers=2", "model.d_model=64", "model.n_heads=4", f"model.seq_len={LENGTH}",
         f"model.vocab_size={V}", f"data.batch_size={BATCH}", f"train.max_steps={STEPS}", "train.lr=0.003",
         "train.warmup_steps=20", f"train.checkpoint_every={STEPS}", "train.log_every=10"]
ARMS = {
    "MLE": ["loss.kind=mle"],
    "loss truncation (drop 50% of rows)": ["loss.kind=loss_truncation", "loss.truncation.drop_fraction=0.5",
                                           "loss.truncation.min_count=256", "loss.truncation.recompute_every=32"],
    "ENT-threshold (1.1)": ["loss.kind=ent", "loss.ent.threshold=1.1", f"loss.ent.warmup_steps={WARMUP}"],
    "ENT-fraction (25% of tokens)": ["loss.kind=ent", "loss.ent.fraction=0.25", f"loss.ent.warmup_steps={WARMUP}"],
    "ENT-fraction (50% of rows)": ["loss.kind=ent", "loss.ent.fraction=0.5", "loss.ent.level=sequence",
                                   f"loss.ent.warmup_steps={WARMUP}"],
}


def make_data(peak: float, seed: int = 0):
    src = MarkovSource(V, peak=peak, seed=seed)
    rng = np.random.default_rng(seed + 1)
    clean = src.sample(N_TRAIN, LENGTH, rng)
    noisy_rows = rng.random(N_TRAIN) < NOISY_SHARE
    corrupt = (rng.random((N_TRAIN, LENGTH)) < TOKEN_NOISE) & noisy_rows[:, None]
    corrupt[:, 0] = False
    train = np.where(corrupt, rng.integers(V, size=(N_TRAIN, LENGTH)), clean)
    held = src.sample(N_HELD, LENGTH, rng)
    # a label at t is token t+1: noisy when token t+1 was corrupted; high-entropy when the
    # (clean) previous state branches
    label_noisy = corrupt[:, 1:]
    branching = src.P.max(axis=1) < 0.5
    label_high_entropy = branching[train[:, :-1]] & ~corrupt[:, :-1] & ~label_noisy
    return src, train, held, noisy_rows, label_noisy, label_high_entropy


def run_setting(peak: float, work: Path) -> dict:
    src, train, held, noisy_rows, label_noisy, label_high = make_data(peak)
    train_dir = write_rows(one_doc_rows(train), work / f"train-{peak}")
    held_dir = write_rows(one_doc_rows(held), work / f"heldout-{peak}")
    floor = src.true_loss(held)
    results = []
    for name, extra in ARMS.items():
        tally = np.zeros(4)  # dropped noisy, noisy seen, dropped clean high-entropy, high-entropy seen

        def observe(step, batch, logits, stats):
            if step <= WARMUP:
                return
            rows = batch["index"].numpy()
            dropped = stats.get("dropped_mask")
            noisy, high = label_noisy[rows], label_high[rows]
            d = np.zeros_like(noisy) if dropped is None else dropped[:, :-1].numpy()
            tally[:] += [(d & noisy).sum(), noisy.sum(), (d & high).sum(), high.sum()]

        out = work / f"peak{peak}-arm{len(results)}"
        trainer, res = train_arm([f"data.dir={train_dir}", f"output.dir={out}", *MODEL, *extra],
                                 step_callback=observe)
        loss = heldout_loss(trainer.model, ShardDataset(held_dir), DocumentCollator(True), batch_size=64)
        results.append({"arm": name, "heldout_loss": loss, "excess": loss - floor,
                        "noisy_dropped": tally[0] / max(tally[1], 1),
                        "high_entropy_dropped": tally[2] / max(tally[3], 1), "wall_s": res["wall_s"]})
        print(f"peak={peak} {name}: held-out {loss:.4f} (floor {floor:.4f}) in {res['wall_s']:.0f} s", flush=True)
    table = markdown_table(results, [
        ("arm", "objective", ""), ("heldout_loss", "clean held-out loss", ".4f"),
        ("excess", "excess over true chain", ".4f"), ("noisy_dropped", "corrupted targets dropped", ".1%"),
        ("high_entropy_dropped", "clean high-entropy targets dropped", ".1%"), ("wall_s", "seconds", ".0f")])
    print(f"peak={peak}: true-chain floor {floor:.4f}\n{table}")
    return {"peak": peak, "floor": floor, "results": results, "table": table}


def main() -> dict:
    work = Path(tempfile.mkdtemp(prefix="exp2-"))
    settings = [run_setting(peak, work) for peak in (1.0, 0.97)]
    payload = {"vocab": V, "length": LENGTH, "train_sequences": N_TRAIN, "noisy_sequence_share": NOISY_SHARE,
               "token_noise_in_noisy_sequences": TOKEN_NOISE, "steps": STEPS, "batch_size": BATCH,
               "ent_warmup_steps": WARMUP, "settings": settings}
    save("exp2_noise", payload)
    plot(settings)
    return payload


def plot(settings):
    plt = pyplot()

    fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 3.5), sharey=True)
    for ax, st in zip(axes, settings):
        names = [r["arm"] for r in st["results"]]
        ax.barh(names, [r["excess"] for r in st["results"]], color="tab:blue")
        ax.set(xlabel="clean held-out loss - true chain (lower is better)",
               title=f"50% noisy sequences, confident states p={st['peak']}")
    axes[0].invert_yaxis()
    fig.tight_layout()
    save_png(fig, RESULTS / "exp2_noise.png")


if __name__ == "__main__":
    main()
