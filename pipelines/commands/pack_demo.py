"""``fewtrunc pack-demo``: pack a real length distribution with every algorithm, in seconds."""
from __future__ import annotations

HELP = "compare packing algorithms on a real length distribution (no tokenizer needed)"
DESCRIPTION = """\
Packs the sizes of the CPython standard library's source files (present wherever Python is;
bytes/4 approximates GPT-2 tokens) with every algorithm and prints bins, the lower bound
ceil(tokens/L), overhead and time. Documents longer than --seq-len are split first, as the paper
does; nothing else is cut.

example:
  fewtrunc pack-demo --seq-len 2048 --repeat 50
"""


def add_arguments(parser) -> None:
    parser.add_argument("--seq-len", type=int, default=2048, help="sequence length L (default 2048)")
    parser.add_argument(
        "--repeat", type=int, default=20, help="tile the distribution this many times (default 20)"
    )
    parser.add_argument(
        "--algorithms", default="bfd,ffd", help="comma-separated: bfd,obfd,ffd,optimal"
    )


def stdlib_lengths(bytes_per_token: int = 4):
    import sysconfig
    from pathlib import Path

    import numpy as np

    root = Path(sysconfig.get_paths()["stdlib"])
    sizes = [p.stat().st_size for p in sorted(root.rglob("*.py")) if "site-packages" not in p.parts]
    n = np.asarray(sizes, dtype=np.int64) // bytes_per_token
    return n[n > 0]


def main(args) -> int:
    import time

    import numpy as np

    from packing import pack, split_documents

    docs = np.tile(stdlib_lengths(), max(1, args.repeat))
    chunks = split_documents(docs, args.seq_len)
    print(
        f"{docs.size:,} documents, {int(docs.sum()):,} tokens; {chunks.n_split_documents:,} "
        f"longer than L={args.seq_len} were split, giving {len(chunks):,} chunks"
    )
    print(f"{'algorithm':10s} {'bins':>10s} {'lower bd':>10s} {'overhead':>10s} {'seconds':>8s}")
    for algo in [a.strip() for a in args.algorithms.split(",") if a.strip()]:
        t0 = time.perf_counter()
        result = pack(chunks.length, args.seq_len, algo)
        dt = time.perf_counter() - t0
        st = result.stats
        print(f"{algo:10s} {st.bins:10,d} {st.lower_bound:10,d} {st.overhead:10.5%} {dt:8.3f}")
    return 0
