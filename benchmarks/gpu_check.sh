#!/usr/bin/env bash
# Train a fixed number of steps on a GPU and print tokens/s and peak memory (under 5 minutes).
# Builds its own shards (real text: CPython's stdlib, GPT-2 tokenizer, Best-fit packed) so it
# needs nothing else. Without a GPU it says so and exits 0.
#   bash benchmarks/gpu_check.sh [STEPS] [extra key=value overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu_check: torch is not importable with $PY (install the [train] extra); nothing to measure."
  exit 0
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA GPU available (torch $("$PY" -c 'import torch; print(torch.__version__)')); nothing to measure."
  exit 0
fi
STEPS=${1:-200}
shift || true
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" - "$WORK/shards" <<'PYEOF'
import sys
sys.path.insert(0, "benchmarks/experiments")
from pathlib import Path
from common import bfd_rows, stdlib_documents, tokenize, write_rows
train, _ = stdlib_documents(heldout_every=10**9)
write_rows(bfd_rows(tokenize(train), 2048), Path(sys.argv[1]))
PYEOF
"$PY" -m pipelines.cli train configs/train_demo.yaml \
  "data.dir=$WORK/shards" "output.dir=$WORK/run" data.vocab_limit=0 data.batch_size=16 \
  model.n_layers=12 model.d_model=768 model.n_heads=12 model.seq_len=2048 \
  train.max_steps="$STEPS" train.checkpoint_every=100000 train.log_every=10 train.threads=0 \
  train.device=cuda train.precision=bf16 "$@"   # add train.compile=true to try torch.compile
"$PY" - "$WORK/run/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
warm = [r for r in rows if r["step"] > 20] or rows
tok = sum(r["input_tokens"] for r in warm)
secs = sum(r["seconds"] for r in warm)
print(f"gpu_check: {rows[-1]['step']} steps; steady-state {tok / secs:,.0f} tokens/s "
      f"(after step 20), peak memory {rows[-1].get('max_memory_mb', 0):,.0f} MiB")
PYEOF
