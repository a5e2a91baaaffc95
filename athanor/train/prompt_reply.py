"""A conversation as (prompt ids, last reply ids), and LLaMA-Factory's split of cutoff_len between the two.

For: `split_last_reply` (rendered and labelled exactly as SFT renders it, encode.py) and `infer_seqlen` (LF's
data/processor/processor_utils.py rule), used where LF's processors take a prompt and one reply: KTO's feedback
samples (kto.py) and do_predict's prompts and labels (predict.py).

Not for: multi-turn SFT rows (encode.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from athanor.train.encode import IGNORE_INDEX, encode_conversation

if TYPE_CHECKING:
    from athanor.text.tokenizer import Tokenizer


def split_last_reply(tokenizer: Tokenizer, messages: list[dict], tools: list[dict] | None = None
                     ) -> tuple[list[int], list[int]]:
    """(ids before the last assistant reply, the reply's ids through its stop token), rendered as SFT renders."""
    ex = encode_conversation(tokenizer, messages, tools, mask_history=True)
    marked = [k for k, label in enumerate(ex.labels) if label != IGNORE_INDEX]
    if not marked:
        return ex.input_ids, []
    return ex.input_ids[: marked[0]], ex.input_ids[marked[0]: marked[-1] + 1]


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's split of cutoff_len between a prompt and its reply: a short reply is kept whole, a short prompt
    is kept whole, else both are cut in proportion to their lengths."""
    if target_len * 2 < cutoff_len:
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target = cutoff_len - source_len
    else:
        max_target = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target = min(max_target, target_len)
    return min(max(cutoff_len - new_target, 0), source_len), new_target
