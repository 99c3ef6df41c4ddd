"""``fewtrunc inspect DIR [--row K]``: totals, and a row decoded with its document boundaries."""
from __future__ import annotations

HELP = "show a run's totals, or decode row K back to text with document boundaries marked"
DESCRIPTION = """\
Prints the run's totals. With --row K, decodes the K-th training sequence (counting across
shards) with the run's tokenizer and marks where each document segment starts:
  ⟦doc <doc_id> chunk <c>: <n> tokens⟧ followed by its text.

examples:
  fewtrunc inspect out/demo
  fewtrunc inspect out/demo --row 0
"""


def add_arguments(parser) -> None:
    parser.add_argument("dir", help="an output directory of `fewtrunc run`")
    parser.add_argument("--row", type=int, default=None, help="row to decode (0-based)")


def main(args) -> int:
    import numpy as np

    from pipelines.commands.run import summary_table
    from pipelines.errors import InputError
    from pipelines.storage.paths import as_path
    from pipelines.shard_format import open_shard
    from pipelines.steps.verify import load_manifest
    from pipelines.tokenizer import load_tokenizer, tokenizer_fingerprint

    out = as_path(args.dir)
    mpath = out / "manifest.json"
    if not mpath.is_file():
        raise InputError(str(out), "no manifest.json: not a finished fewtrunc run")
    manifest = load_manifest(out)  # shard names are checked: only files inside out
    print(summary_table(manifest))
    if args.row is None:
        return 0
    rows = np.cumsum([s["rows"] for s in manifest["shards"]])
    if not 0 <= args.row < (rows[-1] if rows.size else 0):
        raise InputError(str(out), f"row {args.row} out of range (0..{int(rows[-1]) - 1})")
    k = int(np.searchsorted(rows, args.row, side="right"))
    local = args.row - (int(rows[k - 1]) if k else 0)
    row = open_shard(out / manifest["shards"][k]["file"]).slice(local, 1).to_pylist()[0]
    tok = load_tokenizer(manifest["config"]["tokenizer"]["path"] or None)
    if tokenizer_fingerprint(tok) != manifest["tokenizer"]["fingerprint"]:
        print("warning: the tokenizer differs from the run's; decoded text may be wrong")
    print(f"\nrow {args.row} ({manifest['shards'][k]['file']} row {local}): "
          f"{len(row['input_ids'])} tokens, {len(row['doc_lens'])} segments")
    pos = 0
    for n, did, c in zip(row["doc_lens"], row["doc_ids"], row["chunk_index"]):
        text = tok.decode(row["input_ids"][pos : pos + n], skip_special_tokens=False)
        print(f"⟦doc {did} chunk {c}: {n} tokens⟧{text}")
        pos += n
    return 0
