"""``fewtrunc verify DIR``: recompute checksums and invariants of a finished run."""
from __future__ import annotations

HELP = "check a run's shards against its manifest (sha256, rows <= seq_len, totals)"
DESCRIPTION = """\
Recomputes every shard's sha256 and checks: every row has at most seq_len tokens,
sum(doc_lens) == len(input_ids), doc_lens/doc_ids/chunk_index agree per row, shard rows and
tokens match the manifest (and each shard's record batches its recorded batch_rows, which
streaming readers start from), and tokens in == tokens out + tokens of dropped duplicates. Exits 1 with one
line per problem on any mismatch, 0 when the directory is valid.

example:
  fewtrunc verify out/demo
"""


def add_arguments(parser) -> None:
    parser.add_argument("dir", help="an output directory of `fewtrunc run`")


def main(args) -> int:
    from pipelines.steps.verify import verify_dir
    from pipelines.infra.storage.redact import redact_text

    problems, manifest = verify_dir(args.dir)
    if problems:
        for p in problems:
            print(redact_text(f"FAIL {p}"))  # a problem may name the directory's URL
        return 1
    t = manifest["totals"]
    print(f"ok: {len(manifest['shards'])} shards, {t['sequences']:,} rows, "
          f"{t['tokens_out']:,} tokens; checksums and invariants hold")
    return 0
