"""LLaMA-Factory template names render the chat format LLaMA-Factory's format strings describe.

Each expectation below is written by hand from the format strings in LLaMA-Factory's data/template.py (prefix,
system, user, assistant slots; "fused" templates put the system text inside the first user turn), for one
two-turn conversation with a system prompt, so a wrong slot, order or stop word shows up as a diff."""

from __future__ import annotations

import pytest
import tokenizers

from athanor.errors import AthanorError
from athanor.text.lf_templates import LF_TEMPLATES, lf_jinja, lf_stop_words
from athanor.text.tokenizer import Tokenizer
from athanor.train.export import template_source, use_template

B, E = "<s>", "</s>"  # the test tokenizer's BOS and EOS
CONV = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Ok"}]

LLAMA3_USER = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
IM_USER = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
GEMMA_USER = "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n"
EXPECTED = {
    "llama3": B + "<|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|>" + LLAMA3_USER.format("Hi")
    + "Hello<|eot_id|>" + LLAMA3_USER.format("Bye") + "Ok<|eot_id|>",
    "qwen": "<|im_start|>system\nSYS<|im_end|>\n" + IM_USER.format("Hi") + "Hello<|im_end|>\n" + IM_USER.format("Bye")
    + "Ok<|im_end|>\n",
    "chatml": "<|im_start|>system\nSYS<|im_end|>\n" + IM_USER.format("Hi") + "Hello<|im_end|>\n"
    + IM_USER.format("Bye") + "Ok<|im_end|>\n",
    "qwen3_nothink": "<|im_start|>system\nSYS<|im_end|>\n" + IM_USER.format("Hi") + "Hello<|im_end|>\n"
    + IM_USER.format("Bye") + "Ok<|im_end|>\n",
    # reasoning template, thinking on: replies without a thought get an empty one, inside the reply (trained)
    "qwen3": "<|im_start|>system\nSYS<|im_end|>\n" + IM_USER.format("Hi") + "<think>\n\n</think>\n\nHello<|im_end|>\n"
    + IM_USER.format("Bye") + "<think>\n\n</think>\n\nOk<|im_end|>\n",
    "mistral": B + "[INST] SYS\n\nHi[/INST] Hello" + E + "[INST] Bye[/INST] Ok" + E,
    "gemma": B + GEMMA_USER.format("SYS\n\nHi") + "Hello<end_of_turn>\n" + GEMMA_USER.format("Bye") + "Ok<end_of_turn>\n",
    "llama2": B + "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nHi [/INST]Hello" + E + B + "[INST] Bye [/INST]Ok" + E,
    "alpaca": "SYS### Instruction:\nHi\n\n### Response:\nHello" + E + "\n\n### Instruction:\nBye\n\n### Response:\nOk"
    + E + "\n\n",
    "vicuna": "SYSUSER: Hi ASSISTANT:Hello" + E + "USER: Bye ASSISTANT:Ok" + E,
    "default": "System: SYS" + E + "\nHuman: Hi" + E + "\nAssistant:Hello" + E + "\nHuman: Bye" + E + "\nAssistant:Ok"
    + E + "\n",
    "empty": "SYSHiHelloByeOk",
    "deepseek3": B + "SYS<｜User｜>Hi<｜Assistant｜>Hello" + E + "<｜User｜>Bye<｜Assistant｜>Ok" + E,
    "phi": "<|system|>\nSYS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|user|>\nBye<|end|>\n"
    "<|assistant|>\nOk<|end|>\n",
    "phi4": "<|im_start|>system<|im_sep|>SYS<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant"
    "<|im_sep|>Hello<|im_end|><|im_start|>user<|im_sep|>Bye<|im_end|><|im_start|>assistant<|im_sep|>Ok<|im_end|>",
    # efficient_eos: LF's slots end replies without EOS and its data processor appends it; we render it in place
    "glm4": "[gMASK]<sop><|system|>\nSYS<|user|>\nHi<|assistant|>\nHello" + E + "<|user|>\nBye<|assistant|>\nOk" + E,
}


@pytest.fixture
def tok() -> Tokenizer:
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0, B: 1, E: 2, "<|im_end|>": 3,
                                                                "<|im_start|>": 4}, unk_token="<unk>"))
    backend.add_special_tokens([B, E, "<|im_end|>", "<|im_start|>"])
    return Tokenizer(backend, bos_token=B, eos_token=E)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rendering_matches_llama_factory_format_strings(tok, name):
    assert tok.apply_chat_template(CONV, add_generation_prompt=False, chat_template=lf_jinja(name)) == EXPECTED[name]


def test_default_system_and_generation_prompt(tok):
    qwen = lf_jinja("qwen")
    text = tok.apply_chat_template(CONV[1:2], add_generation_prompt=True, chat_template=qwen)
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n" + IM_USER.format("Hi"))
    # a prompt renders exactly as the same conversation does up to its reply (the label mask relies on it)
    full = tok.apply_chat_template(CONV[1:3], add_generation_prompt=False, chat_template=qwen)
    assert full == text + "Hello<|im_end|>\n"


def test_thinking_off_puts_the_empty_thought_in_the_prompt_and_drops_old_thoughts(tok):
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nHello"},
            {"role": "user", "content": "Bye"}]
    text = tok.apply_chat_template(conv, add_generation_prompt=True, chat_template=lf_jinja("qwen3", False))
    assert text == (IM_USER.format("Hi") + "Hello<|im_end|>\n" + IM_USER.format("Bye") + "<think>\n\n</think>\n\n")
    on = tok.apply_chat_template(conv[:2], add_generation_prompt=False, chat_template=lf_jinja("qwen3"))
    assert on == IM_USER.format("Hi") + "<think>\nhmm\n</think>\n\nHello<|im_end|>\n"  # kept as written


def test_every_registered_name_renders(tok):
    assert len(LF_TEMPLATES) >= 100 and {"llama3", "qwen3_nothink", "gemma3", "deepseek3", "glm4"} <= set(LF_TEMPLATES)
    for name in LF_TEMPLATES:
        out = tok.apply_chat_template(CONV, add_generation_prompt=False, chat_template=lf_jinja(name))
        assert "Hello" in out and "Bye" in out and "Ok" in out, name


def test_stop_words_become_stop_tokens_and_unknown_names_list_the_known(tok):
    assert lf_stop_words("chatml") == ("<|im_end|>", "<|im_start|>") and lf_stop_words("llama3")[0] == "<|eot_id|>"
    use_template(tok, "chatml")
    assert {3, 4} <= tok.stop_token_ids  # single tokens of this vocabulary
    with pytest.raises(AthanorError, match=r"^unknown template llama9; known: .*\bllama3\b.*\bqwen3_nothink\b"):
        template_source("llama9", tok)


def test_config_chatml_is_llama_factory_chatml(tok):
    """`template: chatml` keeps athanor's ChatML source; for conversations it renders as LF's chatml does."""
    assert tok.apply_chat_template(CONV, add_generation_prompt=False,
                                   chat_template=template_source("chatml", tok)) == EXPECTED["chatml"]
