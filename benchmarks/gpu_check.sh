#!/usr/bin/env bash
# GPU checks of the training side (about 5 minutes; builds its own shards from CPython's stdlib,
# GPT-2 tokenizer, Best-fit packed to 2048 tokens, so it needs nothing else):
#   1. one process: a GPT-2-small-sized model in bf16, tokens/s and peak memory;
#   2. the FlashAttention-2 varlen batch: PackedCollator(flash_attn_kwargs=True) through a Llama
#      with attn_implementation="flash_attention_2" gives every document the logits it has alone
#      (needs the flash-attn package);
#   3. with >= 2 GPUs: `torchrun` data-parallel training (NCCL) logs the losses of 1 process, fp32.
# Every check ends in a "gpu_check: PASS ..." or "gpu_check: FAIL ..." line; the script exits 1 if
# any failed. Without a GPU it says so and exits 0.
#   bash benchmarks/gpu_check.sh [STEPS] [extra key=value overrides for check 1...]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu_check: torch is not importable with $PY (install the [train] extra); nothing to measure."
  exit 0
fi
NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$NGPU" -lt 1 ]; then
  echo "gpu_check: no CUDA GPU available (torch $("$PY" -c 'import torch; print(torch.__version__)')); nothing to measure."
  exit 0
fi
STEPS=${1:-200}
shift || true
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0
fail() { echo "gpu_check: FAIL: $*" >&2; FAILED=1; }
"$PY" - "$WORK/shards" <<'PYEOF' || { echo "gpu_check: FAIL: could not build the shards" >&2; exit 1; }
import sys
sys.path.insert(0, "benchmarks/experiments")
from pathlib import Path
from common import bfd_rows, stdlib_documents, tokenize, write_rows
train, _ = stdlib_documents(heldout_every=10**9)
write_rows(bfd_rows(tokenize(train), 2048), Path(sys.argv[1]))
PYEOF

echo "gpu_check: 1/3 one process, $NGPU GPU(s) found"
if "$PY" -m pipelines.cli train configs/train_demo.yaml \
  "data.dir=$WORK/shards" "output.dir=$WORK/run" data.vocab_limit=0 data.batch_size=16 \
  model.n_layers=12 model.d_model=768 model.n_heads=12 model.seq_len=2048 \
  train.max_steps="$STEPS" train.checkpoint_every=100000 train.log_every=10 train.threads=0 \
  train.device=cuda train.precision=bf16 "$@"; then   # add train.compile=true to try torch.compile
  "$PY" - "$WORK/run/metrics.jsonl" <<'PYEOF' || fail "could not read the metrics of check 1"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
warm = [r for r in rows if r["step"] > 20] or rows
tok = sum(r["input_tokens"] for r in warm)
secs = sum(r["seconds"] for r in warm)
print(f"gpu_check: PASS 1-process: {rows[-1]['step']} steps; steady-state {tok / secs:,.0f} tokens/s "
      f"(after step 20), peak memory {rows[-1].get('max_memory_mb', 0):,.0f} MiB")
PYEOF
else
  fail "1-process training exited with an error (above)"
fi

echo "gpu_check: 2/3 FlashAttention-2 varlen batch"
"$PY" - "$WORK/shards" <<'PYEOF' || fail "the FlashAttention-2 varlen batch (above)"
import sys
import numpy as np, torch
try:
    import flash_attn  # noqa: F401
    import transformers
except ImportError as exc:
    sys.exit(f"gpu_check: FAIL: {exc.name} is not installed (pip install flash-attn --no-build-isolation); "
             "the FlashAttention-2 varlen batch was not checked")
from training.data import ShardDataset
from training.hf import PackedCollator
ds = ShardDataset(sys.argv[1])
rows = sorted((ds[i] for i in range(min(len(ds), 200))), key=lambda r: -len(r["doc_lens"]))[:4]
cfg = transformers.LlamaConfig(vocab_size=50257, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2)  # default use_cache=True
torch.manual_seed(0)
model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="flash_attention_2",
                                                      dtype=torch.bfloat16).cuda().eval()
batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in PackedCollator(flash_attn_kwargs=True)(rows).items()}
batch.pop("labels")
run = lambda ids: model(input_ids=torch.from_numpy(ids)[None].cuda()).logits[0].float()
with torch.no_grad():
    packed = model(**batch).logits[0].float()
    alone = torch.cat([run(d) for r in rows for d in np.split(r["input_ids"], np.cumsum(r["doc_lens"])[:-1])])
    leak = torch.cat([run(r["input_ids"]) for r in rows])  # every row one sequence: documents see each other
scale = alone.abs().max().item()
apart, seen = (packed - alone).abs().max().item(), (leak - alone).abs().max().item()
docs = sum(len(r["doc_lens"]) for r in rows)
# bf16: a document alone and packed differ by rounding (about 0.5% of the logits' scale, measured
# with SDPA on CPU); documents that see each other differ by about 100% of it
ok = apart <= 0.05 * scale and seen >= 0.2 * scale
print(f"gpu_check: {'PASS' if ok else 'FAIL'} FlashAttention-2 varlen: {docs} documents in {len(rows)} rows; "
      f"max |packed - alone| {apart:.4f}, rows as one sequence {seen:.4f}, logit scale {scale:.3f} "
      "(pass: <= 5% and >= 20% of the scale)")
sys.exit(0 if ok else 1)
PYEOF

if [ "$NGPU" -ge 2 ]; then
  echo "gpu_check: 3/3 data parallel: torchrun --nproc_per_node $NGPU (NCCL) against 1 process"
  DDP=("data.dir=$WORK/shards" data.vocab_limit=8192 "data.batch_size=$((2 * NGPU))" "data.canonical_streams=$((8 * NGPU))"
       model.n_layers=4 model.d_model=256 model.n_heads=4 model.seq_len=2048 train.max_steps=30 train.lr=0.003
       train.checkpoint_every=100000 train.device=cuda train.precision=fp32 train.threads=0 output.plot=false
       train.dist_timeout_s=300)
  if ! CUDA_VISIBLE_DEVICES=0 "$PY" -m pipelines.cli train configs/train_demo.yaml "${DDP[@]}" "output.dir=$WORK/one"; then
    fail "the 1-process reference run exited with an error (above)"
  elif ! "$PY" -m torch.distributed.run --nproc_per_node "$NGPU" -m pipelines.cli train configs/train_demo.yaml \
      "${DDP[@]}" "output.dir=$WORK/many"; then
    fail "torchrun --nproc_per_node $NGPU exited with an error (above)"
  else
    "$PY" - "$WORK/one/metrics.jsonl" "$WORK/many/metrics.jsonl" "$NGPU" <<'PYEOF' || fail "data-parallel losses (above)"
import json, sys
one, many = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
steps_ok = [r["step"] for r in many] == [r["step"] for r in one] == list(range(1, 31))
diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(one, many)) if steps_ok else float("inf")
same = steps_ok and all(a["tokens"] == b["tokens"] and a["rows"] == b["rows"] for a, b in zip(one, many))
# fp32 on GPU: the same math summed in another order (and flex attention's blocks) each step: 1e-3
ok = same and diff <= 1e-3
print(f"gpu_check: {'PASS' if ok else 'FAIL'} data parallel on {sys.argv[3]} GPUs: 30 steps, same rows and "
      f"targets every step: {same}; max |loss - 1-process loss| {diff:.2e} (pass: <= 1e-3)")
sys.exit(0 if ok else 1)
PYEOF
  fi
else
  echo "gpu_check: 3/3 skipped: data parallel needs >= 2 GPUs (found 1)"
fi
if [ "$FAILED" -ne 0 ]; then
  echo "gpu_check: FAILED (see the FAIL lines above)" >&2
  exit 1
fi
echo "gpu_check: all checks passed"
