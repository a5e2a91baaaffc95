"""LLaMA-Factory's label and data keys: mask_history and train_on_prompt (hand-checked label masks on a character-level
tokenizer), streaming (lazily read, held-out records never trained on, LF's refusals), each with LF's reasons."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from athanor.text.tokenizer import Tokenizer
from athanor.train.config import ConfigError, load_config
from athanor.train.encode import IGNORE_INDEX, encode_conversation
from tests.train.test_lf_configs import COMMON, SFT, write_lf_data_dir

TWO_TURNS = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Bye"},
             {"role": "assistant", "content": "Ok"}]


@pytest.fixture(scope="module")
def tok(tiny_hf_dir) -> Tokenizer:
    return Tokenizer.from_hf_dir(tiny_hf_dir)  # ChatML template; one token per character, plus the specials


def _targets(tok: Tokenizer, **kw) -> str:
    """The labelled tokens as text, '|' between labelled runs."""
    ex = encode_conversation(tok, TWO_TURNS, **kw)
    runs, cur = [], []
    for tid, label in zip(ex.input_ids, ex.labels):
        if label == IGNORE_INDEX:
            if cur:
                runs.append(cur)
            cur = []
        else:
            assert label == tid
            cur.append(tid)
    runs += [cur] if cur else []
    return "|".join(tok.backend.decode(r, skip_special_tokens=False) for r in runs)


def test_default_labels_every_reply_and_its_stop_token(tok):
    assert _targets(tok) == "Yo<|im_end|>|Ok<|im_end|>"


def test_mask_history_labels_only_the_last_reply(tok):
    assert _targets(tok, mask_history=True) == "Ok<|im_end|>"


def test_train_on_prompt_labels_every_token(tok):
    full = ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n"
            "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nOk<|im_end|>\n")
    ex = encode_conversation(tok, TWO_TURNS, train_on_prompt=True)
    assert tok.backend.decode(ex.input_ids, skip_special_tokens=False) == full
    assert _targets(tok, train_on_prompt=True) == full


def _cfg(dir: Path, model: Path, keys: dict, drop: tuple[str, ...] = ()) -> Path:
    base = {k: v for k, v in COMMON.items() if k not in drop}
    path = dir / "config.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": str(model), **base, **keys}, sort_keys=False))
    return path


@pytest.fixture
def lf_dir(tmp_path) -> Path:
    return write_lf_data_dir(tmp_path)


@pytest.mark.parametrize("keys, words", [
    ({**SFT, "mask_history": True, "train_on_prompt": True},
     ("mask_history and train_on_prompt are both true; LLaMA-Factory: \"`mask_history` is incompatible with "
      "`train_on_prompt`.\"")),
    ({"stage": "dpo", "dataset": "dpo_en_demo", "train_on_prompt": True},
     "train_on_prompt/mask_history: they apply to stage: sft only (got dpo)"),
    ({**SFT, "streaming": True}, ("streaming: true needs max_steps (a stream has no length to count epochs in); "
                                  "LLaMA-Factory: \"Please specify `max_steps` in streaming mode.\"")),
    ({**SFT, "streaming": True, "max_steps": 2, "max_samples": 5},
     "streaming and max_samples are both set; LLaMA-Factory: \"`max_samples` is incompatible with `streaming`.\""),
    ({**SFT, "streaming": True, "max_steps": 2, "val_size": 0.1}, "val_size: 0.1 is a share, which a stream cannot take"),
    ({"stage": "dpo", "dataset": "dpo_en_demo", "streaming": True, "max_steps": 2},
     "streaming: supported for stage: sft here (got dpo)"),
    ({**SFT, "streaming": True, "max_steps": 2, "packing": True}, "streaming with packing is not supported here"),
])
def test_refusals_quote_llama_factory(lf_dir, tiny_hf_dir, keys, words):
    drop = ("max_samples",) if "max_samples" not in keys else ()
    with pytest.raises(ConfigError) as info:
        load_config(_cfg(lf_dir, tiny_hf_dir, keys, drop), has_cuda=False)
    assert any(p.startswith(words) for p in info.value.problems), info.value.problems


def test_label_and_streaming_keys_are_honoured_not_ignored(lf_dir, tiny_hf_dir):
    cfg = load_config(_cfg(lf_dir, tiny_hf_dir, {**SFT, "mask_history": True, "streaming": True, "max_steps": 3,
                                                 "buffer_size": 4}, ("max_samples",)), has_cuda=False)
    assert (cfg.mask_history, cfg.streaming, cfg.buffer_size) == (True, True, 4)
    assert not any(k in " ".join(cfg.notes) for k in ("mask_history", "streaming", "buffer_size"))


def test_stream_holds_out_its_first_records_and_never_trains_on_them(lf_dir, tiny_hf_dir, tok):
    from athanor.train.streaming import StreamDataset, stream_datasets

    cfg = load_config(_cfg(lf_dir, tiny_hf_dir, {**SFT, "template": None, "streaming": True, "max_steps": 3,
                                                 "val_size": 2, "buffer_size": 3}, ("max_samples",)), has_cuda=False)
    stream, held_out = stream_datasets(cfg, tok, lambda _: None)

    def text(ex):
        return tok.backend.decode(ex.input_ids)

    assert ["0 plus 0" in text(e) for e in held_out] == [True, False] and "1 plus 1" in text(held_out[1])
    seen = []
    for epoch in range(3):  # every pass: the 4 other samples (identity's third, alpaca_en_demo's three), reshuffled
        stream.set_epoch(epoch)
        seen.append([text(e) for e in stream])
        assert len(seen[-1]) == 4 and not {text(e) for e in held_out} & set(seen[-1])
        assert sorted(seen[-1]) == sorted(seen[0])
    assert isinstance(stream, StreamDataset)


def test_streaming_run_trains_max_steps(lf_dir, tiny_hf_dir):
    from athanor.train.run import train

    out = lf_dir / "out"
    keys = {**SFT, "streaming": True, "max_steps": 3, "logging_steps": 1, "cutoff_len": 128, "bf16": False,
            "gradient_accumulation_steps": 1, "output_dir": str(out), "buffer_size": 2}
    lines: list[str] = []
    train(_cfg(lf_dir, tiny_hf_dir, keys, ("max_samples",)), echo=lines.append)
    assert any(line.startswith("streaming identity, alpaca_en_demo (shuffle buffer 2) for 3 steps") for line in lines)
    log = [json.loads(x) for x in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert (out / "adapter_model.safetensors").is_file()


def test_check_does_not_count_a_stream(lf_dir, tiny_hf_dir):
    from athanor.train.check import check_run

    keys = {**SFT, "streaming": True, "max_steps": 3}
    plan = check_run(_cfg(lf_dir, tiny_hf_dir, keys, ("max_samples",)), echo=lambda _: None)
    assert plan.data.startswith("streamed from identity, alpaca_en_demo (not counted") and plan.steps == 3


def test_a_bad_streamed_record_stops_with_its_reason(lf_dir, tiny_hf_dir, tok):
    from athanor.data.registry import DatasetError
    from athanor.train.streaming import examples_of

    rows = json.loads((lf_dir / "identity.json").read_text())
    rows[1]["output"] = ""
    (lf_dir / "identity.json").write_text(json.dumps(rows))
    cfg = load_config(_cfg(lf_dir, tiny_hf_dir, {**SFT, "streaming": True, "max_steps": 3}, ("max_samples",)),
                      has_cuda=False)
    with pytest.raises(DatasetError, match=r"^identity: streamed record: missing or empty 'output'"):
        list(examples_of(cfg, tok, None))
