import math
from dataclasses import replace

import numpy as np
import pyarrow.ipc as ipc
import torch

from pipelines.cli import main as cli
from pipelines.infra.configio import from_dict
from pruning_data import error_norm
from training.checkpoint import latest_checkpoint, load_checkpoint
from training.config import ModelConfig
from training.data import IGNORE_INDEX, DocumentCollator, ShardDataset
from training.model import GPT
from training.scores import SCORE_SCHEMA, read_scores


def test_score_file_is_keyed_by_doc_ids_and_equals_scoring_each_document_alone(
        demo_config, shard_dir, tmp_path, tiny):
    common = [demo_config, f"data.dir={shard_dir}", f"output.dir={tmp_path}", *tiny]
    assert cli(["train", *common, "train.max_steps=3"]) == 0
    assert cli(["score", *common]) == 0
    table = read_scores(tmp_path / "scores.arrow")
    assert table.schema.remove_metadata() == SCORE_SCHEMA.remove_metadata()
    assert ipc.open_file(str(tmp_path / "scores.arrow")).read_all().num_rows == table.num_rows

    state = load_checkpoint(latest_checkpoint(tmp_path))
    model = GPT(replace(from_dict(ModelConfig, state["config"]["model"]), vocab_size=state["vocab_size"]))
    model.load_state_dict(state["model"])
    model.eval()
    dataset = ShardDataset(shard_dir, token_map=state["token_map"].numpy())
    collate = DocumentCollator(reset_position_ids=True)
    sums, counts, maxima = {}, {}, {}
    for i in range(len(dataset)):  # every segment scored alone, in a row of its own
        item = dataset[i]
        starts = np.concatenate([[0], np.cumsum(item["doc_lens"])])
        for j, doc in enumerate(item["doc_ids"].tolist()):
            ids = item["input_ids"][starts[j]:starts[j + 1]]
            alone = collate([{"input_ids": ids, "doc_lens": [ids.size], "doc_ids": [doc],
                              "chunk_index": [0], "index": 0}])
            with torch.no_grad():
                logits = model(alone["input_ids"], alone["position_ids"], alone["segment_ids"])
            norms = error_norm(logits, alone["labels"])[alone["labels"] != IGNORE_INDEX].double()
            sums[doc] = sums.get(doc, 0.0) + float(norms.sum())
            counts[doc] = counts.get(doc, 0) + norms.numel()
            maxima[doc] = max(maxima.get(doc, 0.0), float(norms.max()) if norms.numel() else 0.0)

    assert table.column("doc_id").to_pylist() == sorted(sums)  # one row per document, sorted
    assert min(sums) >= 1000  # the shards' doc_ids, not row positions
    for row in table.to_pylist():
        doc = row["doc_id"]
        assert row["n_scored"] == counts[doc]
        if counts[doc] == 0:
            assert math.isnan(row["el2n"])
        else:
            assert abs(row["el2n"] - sums[doc] / counts[doc]) < 1e-5
        assert abs(row["error_norm_max"] - maxima[doc]) < 1e-5
    assert any(r["n_segments"] > 1 for r in table.to_pylist())  # split documents are aggregated
