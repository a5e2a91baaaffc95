"""Label masks token by token against the rendered text; stop tokens; packing parity with unpacked samples."""

from __future__ import annotations

import json

import pytest
import torch

from athanor.errors import AthanorError
from athanor.text.tokenizer import Tokenizer
from athanor.train.encode import IGNORE_INDEX, Example, collate, encode_conversation, pack_examples

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello world"},
    {"role": "assistant", "content": "Paris 123"},
    {"role": "user", "content": "how are you?"},
    {"role": "assistant", "content": "数字 🙂 fine"},
]

# ChatML that also renders tool calls and tool results (the tiny model's own template ignores them).
TOOL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['tool_calls'] is defined %}{% for c in m['tool_calls'] %}<tool_call>{{ c['function'] | tojson }}"
    "</tool_call>{% endfor %}{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tok(tiny_hf_dir) -> Tokenizer:
    return Tokenizer.from_hf_dir(tiny_hf_dir)


def _runs(ex: Example) -> list[list[int]]:
    """Contiguous runs of labelled tokens."""
    runs, cur = [], []
    for tok_id, label in zip(ex.input_ids, ex.labels):
        if label != IGNORE_INDEX:
            assert label == tok_id
            cur.append(tok_id)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def test_labels_cover_exactly_each_assistant_reply_and_its_stop_token(tok):
    ex = encode_conversation(tok, CONVERSATION)
    # Same ids as the inference path renders and encodes: training and serving see one tokenization.
    assert ex.input_ids == tok.encode_chat(CONVERSATION, add_generation_prompt=False)
    runs = _runs(ex)
    assert [tok.decode(r, skip_special_tokens=False) for r in runs] == ["Paris 123<|im_end|>", "数字 🙂 fine<|im_end|>"]
    assert all(r[-1] == tok.eos_token_id for r in runs)
    # Token by token: a token is labelled iff its text lies inside an assistant reply (+ its <|im_end|>).
    text = tok.apply_chat_template(CONVERSATION, add_generation_prompt=False)
    inside = set()
    for reply in ("Paris 123<|im_end|>", "数字 🙂 fine<|im_end|>"):
        start = text.index(reply)
        inside |= set(range(start, start + len(reply)))
    offsets = tok.backend.encode(text, add_special_tokens=False).offsets
    for (s, e), label in zip(offsets, ex.labels):
        assert (label != IGNORE_INDEX) == (s in inside), (text[s:e], label)
    # Nothing from the system or user turns is learned.
    masked = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab == IGNORE_INDEX])
    assert "hello world" in masked and "how are you?" in masked and "Be brief." in masked


def test_tool_call_turns_are_learned_and_tool_results_are_not(tok):
    messages = [
        {"role": "user", "content": "12*7?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": {"expr": "12*7"}}}]},
        {"role": "tool", "content": "84"},
        {"role": "assistant", "content": "It is 84."},
    ]
    ex = encode_conversation(tok, messages, chat_template=TOOL_TEMPLATE)
    runs = [tok.decode(r, skip_special_tokens=False) for r in _runs(ex)]
    assert runs == ['<tool_call>{"name": "calculator", "arguments": {"expr": "12*7"}}</tool_call><|im_end|>',
                    "It is 84.<|im_end|>"]
    masked = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab == IGNORE_INDEX])
    assert "84" in masked  # the tool result sits in the prompt part


def test_eos_is_appended_when_the_template_does_not_close_assistant_turns(tok):
    template = ("{% for m in messages %}{% if m['role'] == 'user' %}<|im_start|>{{ m['content'] }}\n"
                "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}")
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]
    ex = encode_conversation(tok, messages, chat_template=template)
    assert ex.input_ids[-1] == tok.eos_token_id and ex.labels[-1] == tok.eos_token_id
    assert tok.decode(_runs(ex)[0], skip_special_tokens=False) == "world\n<|im_end|>"


def test_template_that_rewrites_history_is_refused(tok):
    # Drops every assistant reply but the last one, as reasoning templates do with <think> blocks.
    template = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}<|im_start|>{{ m['role'] }}\n"
                "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(AthanorError, match="renders turn 2 differently"):
        encode_conversation(tok, CONVERSATION, chat_template=template)


def test_cutoff_len_truncates(tok):
    ex = encode_conversation(tok, CONVERSATION, cutoff_len=10)
    assert len(ex.input_ids) == len(ex.labels) == 10


def test_packing_resets_positions_and_never_labels_a_sample_start():
    a = Example([1, 2, 3], [IGNORE_INDEX, 2, 3])
    b = Example([4, 5], [4, 5])  # labelled from its first token (e.g. pretraining text)
    c = Example([6, 7, 8, 9], [IGNORE_INDEX, IGNORE_INDEX, 8, 9])
    rows = pack_examples([a, b, c], max_len=6)
    # best-fit decreasing: c (4) opens row 1, a (3) does not fit beside it and opens row 2, b (2) fills row 1;
    # inside a row samples keep their dataset order
    assert [r.input_ids for r in rows] == [[4, 5, 6, 7, 8, 9], [1, 2, 3]]
    assert rows[0].position_ids == [0, 1, 0, 1, 2, 3]
    assert rows[0].labels == [IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX, 8, 9]


def test_packing_fills_rows_that_in_order_packing_leaves_half_empty():
    lengths = [6, 5, 6, 5, 4, 4, 3, 3]  # 36 tokens: in order into width 10 this takes 5 rows, best fit takes 4
    examples = [Example(list(range(1, n + 1)), list(range(1, n + 1))) for n in lengths]
    rows = pack_examples(examples, max_len=10)
    assert len(rows) == 4 and all(len(r.input_ids) <= 10 for r in rows)
    assert sorted(len(r.input_ids) for r in rows) == [6, 10, 10, 10]
    assert sum(r.position_ids.count(0) for r in rows) == len(examples)  # every sample once


def test_packed_rows_give_the_same_logits_as_samples_alone(tok, tiny_hf_dir):
    """No cross-sample attention: each sample's logits inside a packed, padded batch equal its logits alone."""
    import transformers

    from athanor.train.packed_attention import sample_bounds

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32).eval()
    samples = [encode_conversation(tok, CONVERSATION[:3]), encode_conversation(tok, CONVERSATION[3:]),
               encode_conversation(tok, [CONVERSATION[1], CONVERSATION[2]])]
    width = max(len(samples[0].input_ids), len(samples[1].input_ids)) + len(samples[2].input_ids)
    rows = pack_examples(samples, max_len=width)
    assert len(rows) == 2 and min(len(r.input_ids) for r in rows) < width  # one row gets padding
    batch = collate(rows, pad_token_id=0)
    assert "attention_mask" not in batch
    with torch.no_grad():
        # use_cache=False: transformers only builds the per-sample mask when no KV cache is in play (training).
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits  # (B, T, V)
        seen = 0
        for b, row in enumerate(rows):
            bounds = sample_bounds(torch.tensor(row.position_ids))
            for s, e in zip(bounds, bounds[1:]):
                alone = model(input_ids=batch["input_ids"][b:b + 1, s:e]).logits[0]
                torch.testing.assert_close(packed[b, s:e], alone, atol=1e-5, rtol=1e-4)
                seen += 1
    assert seen == len(samples)


def test_template_without_tool_support_learns_the_format_inference_parses(tok):
    """The tiny model's template (like SmolLM2's) renders neither tools nor tool_calls: the trained text must be
    what athanor's own inference side shows the model (tools in the system message) and parses back."""
    from athanor.text.chat_format import adapt_to_template  # what llm/local.py and serve/tool_calls.py show the model
    from athanor.text.tool_parsing import parse_tool_calls

    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "user", "content": "12*7?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": {"expr": "12*7"}}}]},
        {"role": "tool", "content": "84"},
        {"role": "assistant", "content": "It is 84."},
    ]
    ex = encode_conversation(tok, messages, tools)
    call_text, answer = (tok.decode(r, skip_special_tokens=False) for r in _runs(ex))
    assert call_text.endswith("<|im_end|>") and answer == "It is 84.<|im_end|>"
    text, calls = parse_tool_calls(call_text.removesuffix("<|im_end|>"), {"calculator"})
    assert text == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("calculator", {"expr": "12*7"})]
    system = adapt_to_template(tok, messages[:1], tools)[0][0]["content"]
    assert tok.decode(ex.input_ids, skip_special_tokens=False).startswith(f"<|im_start|>system\n{system}<|im_end|>")
