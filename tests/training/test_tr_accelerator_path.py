"""The code path a GPU run takes (bf16 autocast, torch.compile), exercised on CPU: the same
trainer switches, so a CUDA machine only changes the device."""
import json
import math

from pipelines.cli import main as cli


def _losses(out):
    return [json.loads(line)["loss"] for line in open(out / "metrics.jsonl")]


def test_bf16_autocast_and_compile_train_on_cpu(demo_config, shard_dir, tiny, tmp_path):
    base = ["train", demo_config, f"data.dir={shard_dir}", *tiny, "train.max_steps=3",
            "train.device=cpu"]
    assert cli([*base, f"output.dir={tmp_path / 'fp32'}", "train.precision=fp32"]) == 0
    assert cli([*base, f"output.dir={tmp_path / 'bf16'}", "train.precision=bf16",
                "train.compile=true"]) == 0
    fp32, bf16 = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    assert len(bf16) == 3 and all(math.isfinite(x) for x in bf16)
    # autocast really ran in bf16: same data and init, losses close but not bit-identical
    assert bf16 != fp32
    assert all(abs(a - b) < 0.1 for a, b in zip(fp32, bf16))
