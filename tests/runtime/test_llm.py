"""The text face: defaults from the model then the request, SYSTEM/MESSAGE, stop strings, logprobs."""

from __future__ import annotations

import pytest
import torch

from athanor.engine.config import EngineConfig
from athanor.engine.sampling_params import SamplingParams
from athanor.models.store import Store
from athanor.runtime.llm import LLM
from tests.nn.test_parity_tiny import full_logits


@pytest.fixture()
def pirate(tiny_hf_dir, tmp_path):
    mf = tmp_path / "Modelfile"
    mf.write_text(f'FROM {tiny_hf_dir}\nPARAMETER temperature 0\nPARAMETER top_k 7\nSYSTEM """Be a pirate."""\n'
                  'MESSAGE user Who are you?\nMESSAGE assistant A pirate.\n')
    Store().create("pirate", mf)
    return LLM.load("pirate", EngineConfig(num_kvcache_blocks=64, block_size=8))


def test_defaults_then_request_overrides(pirate):
    sp = pirate.sampling_params()
    assert sp.temperature == 0 and sp.top_k == 7
    sp = pirate.sampling_params({"temperature": 0.5, "num_predict": 9})
    assert sp.temperature == 0.5 and sp.top_k == 7 and sp.max_tokens == 9


def test_system_and_messages_are_put_first(pirate):
    text = pirate.tokenizer.decode(pirate.chat_prompt([{"role": "user", "content": "hello"}]), skip_special_tokens=False)
    assert text.index("Be a pirate.") < text.index("Who are you?") < text.index("A pirate.") < text.index("hello")
    own = pirate.tokenizer.decode(pirate.chat_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]),
                                  skip_special_tokens=False)
    assert "Be brief." in own and "Be a pirate." not in own  # a request's own system prompt wins


def test_stop_strings_cut_the_text(tiny_hf_dir):
    llm = LLM.load(str(tiny_hf_dir), EngineConfig(num_kvcache_blocks=64, block_size=8))
    base = llm.generate("hello world", {"temperature": 0, "max_tokens": 30, "ignore_eos": True})[0]
    stop = llm.tokenizer.decode(base.token_ids[1:3])  # random weights: pick whole tokens, not half a UTF-8 char
    assert stop and "\ufffd" not in stop
    got = llm.generate("hello world", {"temperature": 0, "max_tokens": 30, "ignore_eos": True, "stop": [stop]})[0]
    assert got.finish_reason == "stop" and got.text == base.text[: base.text.index(stop)]
    assert llm.engine.block_manager.num_free_blocks == len(llm.engine.block_manager.blocks)


def test_stop_string_completed_by_the_last_token_counts_as_stop(tiny_hf_dir):
    from athanor.runtime.llm import TextStream
    from athanor.text.tokenizer import Tokenizer

    tok = Tokenizer.from_hf_dir(tiny_hf_dir)
    ids = tok.encode("hello world")
    stream = TextStream(tok, SamplingParams(stop=["world"]), [])
    for i, t in enumerate(ids):
        stream.feed([t], finished=i == len(ids) - 1)  # the engine ends it (length) on the same token
    assert stream.stopped and stream.text == "hello "


def test_special_token_stop_string_becomes_a_stop_id(tiny_hf_dir):
    llm = LLM.load(str(tiny_hf_dir), EngineConfig(num_kvcache_blocks=64, block_size=8))
    sp = llm.sampling_params({"stop": ["<|im_start|>"]})
    assert llm.tokenizer.token_to_id("<|im_start|>") in sp.stop_token_ids


def test_logprobs_equal_log_softmax_of_the_model(tiny_hf_dir):
    llm = LLM.load(str(tiny_hf_dir), EngineConfig(num_kvcache_blocks=64, block_size=8))
    prompt = llm.tokenizer.encode("The capital of France")
    c = llm.generate_ids([prompt], SamplingParams(temperature=0.8, seed=3, max_tokens=6, logprobs=3, ignore_eos=True))[0]
    ids = prompt + c.token_ids
    ref = torch.log_softmax(full_logits(llm.engine.runner.model, ids[:-1]), dim=-1)[len(prompt) - 1 :]
    for step, sample in enumerate(c.logprobs):
        assert sample.token_id == c.token_ids[step]
        assert sample.logprob == pytest.approx(ref[step, sample.token_id].item(), abs=1e-4)
        top = torch.topk(ref[step], 3)
        assert [t for t, _ in sample.top_logprobs] == top.indices.tolist()
