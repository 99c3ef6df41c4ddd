"""Rebuild python-docs-en.jsonl.zst from this interpreter's documentation text (see README.md)."""
import json
import re
import sysconfig
from pathlib import Path

import zstandard
from pydoc_data import topics

HERE = Path(__file__).resolve().parent
HEADING = re.compile(r"[*=~\-^]{3,}")


def sections(text: str) -> list[str]:
    lines = text.split("\n")
    starts = [0]
    for i in range(1, len(lines)):
        under = lines[i]
        if HEADING.fullmatch(under) and len(under) == len(lines[i - 1].rstrip()) \
                and i - 1 > starts[-1]:
            starts.append(i - 1)
    starts.append(len(lines))
    return ["\n".join(lines[a:b]).strip() for a, b in zip(starts, starts[1:])]


def main() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    recs = []
    for name, text in sorted(topics.topics.items()):
        recs += [{"id": f"pydoc-topics/{name}#{j}", "text": s}
                 for j, s in enumerate(sections(text)) if s]
    for path in sorted((root / "idlelib").glob("*.txt")):
        recs.append({"id": f"idlelib/{path.name}", "text": path.read_text()})
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode()
    out = HERE / "python-docs-en.jsonl.zst"
    out.write_bytes(zstandard.ZstdCompressor(level=19, write_checksum=True).compress(data))
    print(f"{len(recs)} documents, {len(data):,} bytes -> {out.name}")


if __name__ == "__main__":
    main()
