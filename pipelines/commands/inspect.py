"""``fewtrunc inspect DIR [--row K]``: totals, and a row decoded with its document boundaries."""
from __future__ import annotations

HELP = "show a run's totals, or decode row K back to text with document boundaries marked"
DESCRIPTION = """\
Prints the run's totals. With --row K, decodes the K-th training sequence (counting across
shards) with the run's tokenizer and marks where each document segment starts:
  ⟦doc <doc_id> chunk <c>: <n> tokens⟧ followed by its text.
The row's record batch is checked first (offsets, lengths, ids): a damaged shard is one line
naming it (`fewtrunc verify` also recomputes the checksums).

examples:
  fewtrunc inspect out/demo
  fewtrunc inspect out/demo --row 0
"""


def add_arguments(parser) -> None:
    parser.add_argument("dir", help="an output directory of `fewtrunc run`")
    parser.add_argument("--row", type=int, default=None, help="row to decode (0-based)")


def main(args) -> int:
    import numpy as np
    import pyarrow as pa

    from pipelines.commands.run import summary_table
    from pipelines.infra.errors import InputError
    from pipelines.infra.storage.location import Location
    from pipelines.infra.manifest import load_manifest
    from pipelines.infra.tokenizer import load_tokenizer, tokenizer_fingerprint
    from training.shard_checks import ShardError, open_shard_file, read_batch

    where = Location.of(args.dir)
    out = where.as_path()
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
    path = out / manifest["shards"][k]["file"]
    # checked like the training side reads shards: damage is one line naming the file
    reader = open_shard_file(pa.py_buffer(path.read_bytes()) if where.remote else str(path), str(path))
    skip = local
    for b in range(reader.num_record_batches):
        cols = read_batch(reader, b, str(path))
        n = cols["input_ids"][0].size - 1
        if skip < n:
            break
        skip -= n
    else:
        raise ShardError(str(path), f"holds fewer rows than the {manifest['shards'][k]['rows']} of manifest.json")
    row = {name: values[offsets[skip]:offsets[skip + 1]] for name, (offsets, values) in cols.items()}
    tok = load_tokenizer(manifest["config"]["tokenizer"]["path"] or None)
    if tokenizer_fingerprint(tok) != manifest["tokenizer"]["fingerprint"]:
        print("warning: the tokenizer differs from the run's; decoded text may be wrong")
    if row["input_ids"].size and int(row["input_ids"].max()) >= tok.get_vocab_size():
        raise ShardError(str(path), f"row {local}: token id {int(row['input_ids'].max())} is outside the "
                                    f"tokenizer's {tok.get_vocab_size()} ids (a damaged file, or not the run's tokenizer)")
    print(f"\nrow {args.row} ({manifest['shards'][k]['file']} row {local}): "
          f"{row['input_ids'].size} tokens, {row['doc_lens'].size} segments")
    pos, ids = 0, row["input_ids"].tolist()
    for n, did, c in zip(row["doc_lens"].tolist(), row["doc_ids"].tolist(), row["chunk_index"].tolist()):
        text = tok.decode(ids[pos : pos + n], skip_special_tokens=False)
        print(f"⟦doc {did} chunk {c}: {n} tokens⟧{text}")
        pos += n
    return 0
