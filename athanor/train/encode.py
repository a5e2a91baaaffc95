"""Conversations -> token ids and labels for SFT, rendered with the model's own chat template; packing; collation.

For: `encode_conversation` (loss only on assistant turns, every turn, each ending with the template's stop token so
the trained model learns to stop), `pack_examples` (several samples per row, best-fit decreasing, position ids
restarting per sample so no sample attends to another: packed_attention.py, or transformers' block-diagonal mask)
and `collate` (rows -> tensors).

Not for: reading datasets (data/) or running the trainer (sft.py). The label mask is found by rendering prefixes of
the conversation with the same template and mapping their character offsets onto the tokens of the full render, so
it works for any template whose earlier turns render the same whatever follows them (checked, not assumed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from athanor.errors import AthanorError
from athanor.text.chat_format import adapt_to_template

if TYPE_CHECKING:
    import torch

    from athanor.text.tokenizer import Tokenizer

IGNORE_INDEX = -100  # label value that transformers' cross-entropy skips


@dataclass
class Example:
    """One tokenized sample (or packed row): labels[i] = input_ids[i] where the loss applies, else IGNORE_INDEX."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int] | None = None  # None: 0..n-1

    @property
    def num_label_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def assistant_spans(tokenizer: Tokenizer, messages: list[dict], tools: list[dict] | None = None,
                    chat_template: str | None = None) -> tuple[str, list[tuple[int, int]]]:
    """(full rendered text, [(start, end) character span of each assistant turn]).

    A turn's span starts after the generation prompt (`<|im_start|>assistant\\n`) and ends where the template
    ends that turn, so it holds the reply, its tool calls and the end-of-turn token."""
    def render(msgs: list[dict], gen: bool) -> str:
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=gen, tools=tools, chat_template=chat_template)

    full = render(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, through = render(messages[:i], True), render(messages[: i + 1], False)
        if not (full.startswith(before) and full.startswith(through) and len(before) <= len(through)):
            raise AthanorError(f"the chat template renders turn {i} differently once later turns follow (e.g. it "
                               "drops reasoning from history); train on one assistant turn per sample instead")
        spans.append((len(before), len(through)))
    return full, spans


def encode_conversation(tokenizer: Tokenizer, messages: list[dict], tools: list[dict] | None = None, *,
                        chat_template: str | None = None, cutoff_len: int | None = None,
                        mask_history: bool = False, train_on_prompt: bool = False) -> Example:
    """Render with the template, tokenize once, label only assistant turns (each closed by a stop token).

    LLaMA-Factory's label keys: `mask_history` labels only the last assistant turn (earlier replies become
    context); `train_on_prompt` labels the prompt tokens too (system, user, tool turns and the template's markup)."""
    messages, tools = adapt_to_template(tokenizer, messages, tools, chat_template)
    full, spans = assistant_spans(tokenizer, messages, tools, chat_template)
    enc = tokenizer.backend.encode(full, add_special_tokens=False)  # the template writes BOS itself
    stop_ids = tokenizer.stop_token_ids
    input_ids: list[int] = []
    labels: list[int] = []
    turn_of = _turn_index(enc.offsets, spans)
    turn_at: list[int | None] = []  # the assistant turn each kept token belongs to (None: prompt)
    for k, (tok, turn) in enumerate(zip(enc.ids, turn_of)):
        input_ids.append(tok)
        labels.append(tok if turn is not None else IGNORE_INDEX)
        is_turn_end = turn is not None and (k + 1 == len(enc.ids) or turn_of[k + 1] != turn)
        if is_turn_end:
            _close_turn(input_ids, labels, stop_ids, tokenizer.eos_token_id)
        turn_at += [turn] * (len(input_ids) - len(turn_at))
    if mask_history or train_on_prompt:
        labels = _relabel(input_ids, labels, turn_at, len(spans) - 1, mask_history, train_on_prompt)
    if cutoff_len is not None:
        input_ids, labels = input_ids[:cutoff_len], labels[:cutoff_len]
    return Example(input_ids, labels)


def _relabel(input_ids: list[int], labels: list[int], turn_at: list[int | None], last_turn: int,
             mask_history: bool, train_on_prompt: bool) -> list[int]:
    """mask_history: replies before the last one are not targets; train_on_prompt: every other token is."""
    out = []
    for tok, label, turn in zip(input_ids, labels, turn_at):
        history = turn is not None and turn != last_turn
        if mask_history and history:
            label = IGNORE_INDEX
        elif train_on_prompt and label == IGNORE_INDEX and not (mask_history and history):
            label = tok
        out.append(label)
    return out


def _turn_index(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int | None]:
    """For each token: the assistant turn whose span it starts in, or None (prompt, system, user, tool)."""
    out: list[int | None] = []
    for start, end in offsets:
        hit = None
        for t, (s, e) in enumerate(spans):
            if s <= start < e and end > start:
                hit = t
                break
        out.append(hit)
    return out


def _close_turn(input_ids: list[int], labels: list[int], stop_ids: set[int], eos_id: int | None) -> None:
    """End this turn's labels at its last stop token (text after it, e.g. "\\n", is not learned); if the template
    wrote no stop token, append EOS so the model still learns to stop."""
    n = len(input_ids)
    start = n
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    last_stop = max((k for k in range(start, n) if input_ids[k] in stop_ids), default=None)
    if last_stop is not None:
        for k in range(last_stop + 1, n):
            labels[k] = IGNORE_INDEX
        return
    if eos_id is None:
        raise AthanorError("the chat template ends assistant turns without a stop token and the tokenizer has no "
                           "eos_token; set one in tokenizer_config.json so the trained model can stop")
    input_ids.append(eos_id)
    labels.append(eos_id)


# ------------------------------------------------------------------------------------------------ packing


def pack_examples(examples: list[Example], max_len: int) -> list[Example]:
    """Pack samples into rows of at most max_len tokens, best-fit decreasing: longest sample first, each into the
    fullest row it still fits, so rows come out nearly full (little padding) whatever order the data has. Inside a
    row samples keep their dataset order; positions restart at 0 for every sample."""
    import bisect

    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    members: list[list[int]] = []  # sample indices per row
    for i in sorted(range(len(examples)), key=lambda k: -len(examples[k].input_ids)):
        n = len(examples[i].input_ids)
        assert n <= max_len, "truncate to cutoff_len before packing"
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):  # fits nowhere: a new row
            members.append([i])
            bisect.insort(free, (max_len - n, len(members) - 1))
        else:
            room, row = free.pop(at)
            members[row].append(i)
            bisect.insort(free, (room - n, row))
    rows = []
    for row in members:
        cur = Example([], [], [])
        for i in sorted(row):
            ex = examples[i]
            cur.input_ids += ex.input_ids
            # The first token of a sample is never a target: in a packed row it would be "predicted" by the
            # previous sample's last token.
            cur.labels += [IGNORE_INDEX] + ex.labels[1:]
            cur.position_ids += list(range(len(ex.input_ids)))
        rows.append(cur)
    return rows


def collate(rows: list[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Rows -> input_ids, labels, position_ids (B, T). No attention_mask: with position_ids alone, transformers
    masks per sample (positions restart = new sample), and right padding is its own sample that nothing attends to.
    That per-sample mask is only built without a KV cache: run the model with use_cache=False."""
    import torch

    width = max(len(r.input_ids) for r in rows)
    input_ids, labels, position_ids = [], [], []
    for r in rows:
        pad = width - len(r.input_ids)
        positions = r.position_ids if r.position_ids is not None else list(range(len(r.input_ids)))
        input_ids.append(r.input_ids + [pad_token_id] * pad)
        labels.append(r.labels + [IGNORE_INDEX] * pad)
        position_ids.append(positions + list(range(pad)))
    return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels),
            "position_ids": torch.tensor(position_ids)}
