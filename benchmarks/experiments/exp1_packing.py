"""Experiment 1 - packing: Best-fit packing with document masking vs concatenation (with and
without the mask), same token budget, same model, same steps.

Data: every top-level function/class of CPython's stdlib is a document (real code, broad length
distribution); every 10th module is held out. Held-out loss is measured on the held-out documents
each in its own context (Best-fit rows, document-masked), i.e. how a document is read at inference.
Run: python benchmarks/experiments/exp1_packing.py   (about 3-4 minutes on 2 CPU cores)
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from common import (RESULTS, bfd_rows, concat_rows, markdown_table, save, stdlib_documents,
                    tokenize, train_arm, truncated_documents, write_rows, curves)
from pipelines.infra.plotting import pyplot, save_png
from training.data import DocumentCollator, ShardDataset
from training.evaluate import heldout_loss

SEQ_LEN, STEPS, BATCH = 256, 160, 16
MODEL = ["model.n_layers=2", "model.d_model=128", "model.n_heads=4", f"model.seq_len={SEQ_LEN}",
         "data.vocab_limit=2048", f"data.batch_size={BATCH}", f"train.max_steps={STEPS}",
         "train.lr=0.003", "train.warmup_steps=20", "train.decay_steps=140", "train.log_every=5",
         f"train.checkpoint_every={STEPS}"]


def main() -> dict:
    train_docs, held_docs = stdlib_documents()
    train_ids, held_ids = tokenize(train_docs), tokenize(held_docs)
    work = Path(tempfile.mkdtemp(prefix="exp1-"))
    held_dir = write_rows(bfd_rows(held_ids, SEQ_LEN), work / "heldout")
    arms = {
        "BFD + document mask": (bfd_rows(train_ids, SEQ_LEN), None),
        "concat + document mask": (concat_rows(train_ids, SEQ_LEN, masked=True), None),
        "concat, no mask": (concat_rows(train_ids, SEQ_LEN, masked=False),
                            concat_rows(train_ids, SEQ_LEN, masked=True)),
    }
    results = []
    for name, (rows, boundary_rows) in arms.items():
        data_dir = write_rows(rows, work / name.replace(" ", "_").replace(",", "").replace("+", "p"))
        out = work / (data_dir.name + "_run")
        trainer, res = train_arm([f"data.dir={data_dir}", f"output.dir={out}", *MODEL])
        held = ShardDataset(held_dir, token_map=trainer.dataset.token_map)
        loss = heldout_loss(trainer.model, held, DocumentCollator(True), batch_size=32)
        n_tokens = int(sum(len(r) for r in rows["input_ids"]))
        results.append({
            "arm": name, "rows": len(rows["input_ids"]), "tokens": n_tokens,
            "fill": n_tokens / (len(rows["input_ids"]) * SEQ_LEN),
            "docs_truncated": truncated_documents(boundary_rows or rows, len(train_ids)),
            "docs": len(train_ids),
            "trained_tokens": STEPS * BATCH * SEQ_LEN,
            "heldout_loss": loss, "final_train_loss": res["last"]["loss"], "wall_s": res["wall_s"],
            "curve": curves(out)})
        print(f"{name}: held-out loss {loss:.4f} ({res['wall_s']:.0f} s)", flush=True)
    for r in results:
        r["truncated_share"] = r["docs_truncated"] / r["docs"]
    table = markdown_table(results, [
        ("arm", "arm", ""), ("rows", "rows", ",d"), ("fill", "fill", ".4f"),
        ("docs_truncated", "docs truncated", ",d"), ("truncated_share", "share", ".1%"),
        ("heldout_loss", "held-out loss", ".4f"), ("final_train_loss", "last train loss", ".3f"),
        ("wall_s", "seconds", ".0f")])
    print(table)
    payload = {"seq_len": SEQ_LEN, "steps": STEPS, "batch_size": BATCH, "train_documents": len(train_ids),
               "heldout_documents": len(held_ids), "heldout_tokens": int(sum(d.size for d in held_ids)),
               "results": results, "table": table}
    save("exp1_packing", payload)
    plot(results)
    return payload


def plot(results):
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for r in results:
        steps, losses = zip(*r["curve"])
        ax.plot(steps, losses, lw=1, label=f"{r['arm']} (held-out {r['heldout_loss']:.3f})")
    ax.set(xlabel="step", ylabel="training loss", title="Packing: BFD vs concatenation", ylim=(None, 6))
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, RESULTS / "exp1_packing.png")


if __name__ == "__main__":
    main()
