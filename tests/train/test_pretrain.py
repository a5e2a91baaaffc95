"""stage: pt: plain texts become rows with the loss on every token, bad records are reported up front, and a
packed LoRA run on the tiny model learns its corpus."""

from __future__ import annotations

import json

import pytest
import yaml

from athanor.data.registry import DatasetError
from athanor.text.tokenizer import Tokenizer
from athanor.train.encode import IGNORE_INDEX
from athanor.train.pretrain import encode_texts, load_all_texts, load_texts
from athanor.train.run import train

TEXTS = ["The capital of France is Paris.", "hello world, how are you?"]


@pytest.fixture(scope="module")
def tok(tiny_hf_dir) -> Tokenizer:
    return Tokenizer.from_hf_dir(tiny_hf_dir)


def test_every_token_is_a_label_and_each_text_ends_with_eos(tok):
    examples = encode_texts(tok, TEXTS, cutoff_len=64)
    assert len(examples) == 2
    for ex, text in zip(examples, TEXTS):
        assert ex.labels == ex.input_ids and IGNORE_INDEX not in ex.labels
        assert ex.input_ids[-1] == tok.eos_token_id
        assert tok.decode(ex.input_ids[:-1]) == text


def test_long_texts_are_split_not_cut(tok):
    ids = tok.backend.encode(TEXTS[0], add_special_tokens=False).ids
    pieces = encode_texts(tok, [TEXTS[0]], cutoff_len=3)
    joined = [t for p in pieces for t in p.input_ids]
    full = ids + [tok.eos_token_id]
    assert joined == full[:len(joined)] and len(full) - len(joined) <= 1  # only a lone last token is dropped
    assert all(2 <= len(p.input_ids) <= 3 for p in pieces) and len(pieces) >= 3


def test_text_files_columns_and_bad_records(tmp_path):
    (tmp_path / "corpus.txt").write_text("first line\n\nsecond line\n")
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in [{"body": "a"}, {"body": "b"}]))
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in [{"text": "ok"}, {"text": ""}, {"x": 1}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"docs": {"file_name": "docs.jsonl",
                                                                     "columns": {"prompt": "body"}}}))
    assert load_texts("corpus.txt", tmp_path)[0] == ["first line", "second line"]
    assert load_texts("docs", tmp_path)[0] == ["a", "b"]
    texts, report = load_texts("bad.jsonl", tmp_path)
    assert texts == ["ok"] and report.num_invalid == 2 and report.first_error[0] == 1
    with pytest.raises(DatasetError, match="bad.jsonl: 1 valid, 2 invalid; first bad record #1: no non-empty"):
        load_all_texts(["corpus.txt", "bad.jsonl"], tmp_path)


def test_pt_run_learns_its_corpus(tmp_path, tiny_hf_dir):
    (tmp_path / "corpus.txt").write_text("\n".join(TEXTS * 3))
    (tmp_path / "pt.yaml").write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_hf_dir), "stage": "pt", "dataset": "corpus.txt", "packing": True,
        "cutoff_len": 64, "lora_target": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head",
        "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 2, "learning_rate": 1e-2,
        "max_steps": 24, "logging_steps": 6, "save_steps": 100, "lr_scheduler_type": "constant", "seed": 0}))
    lines = []
    out = train(tmp_path / "pt.yaml", echo=lines.append)
    assert any("corpus.txt: 6 valid, 0 invalid" in line for line in lines)
    losses = [json.loads(r)["loss"] for r in (out / "trainer_log.jsonl").read_text().splitlines() if '"loss"' in r]
    assert len(losses) == 4 and losses[-1] < 0.4 * losses[0], losses
    assert (out / "adapter_model.safetensors").is_file()
