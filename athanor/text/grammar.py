"""Constrained decoding: JSON schemas and tool-call grammars compiled into per-token masks (llguidance).

`Grammars(tokenizer)` compiles; a compiled `Guide` is immutable and shared by a request's n choices; each
sequence gets its own `Matcher` (the engine makes it at admission), which says which token ids may come
next and is told each token that was sampled. The engine applies the mask before sampling, so the text is
valid by construction: a JSON value that parses and matches the schema, or tool calls in the model's own
format whose arguments match the function's parameters.

Why llguidance (benchmarks/bench_grammar.py, SmolLM2's 49k vocab, this CPU): it imports in 0.05 s without
transformers (xgrammar imports transformers and pulls triton), compiles a schema in under 1 ms (xgrammar
6 ms, outlines-core 33 ms to 7 s), and computes a mask in 20-140 µs per token, well under 1% of a decode
step. It also takes Lark grammars with embedded JSON schemas, which tool calls need.

Not for: parsing tool calls out of text (text/tool_parsing.py) or the API fields that ask for this (serve/).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from athanor.errors import AthanorError

# JSON the way json.dumps writes it: one space after ':' and ','; no newlines, so a small model cannot
# pad its answer with whitespace forever
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class GrammarError(AthanorError, ValueError):
    """A schema or grammar that cannot be compiled (the message says why)."""


class Matcher:
    """One sequence's position in a grammar: the allowed next tokens, and the tokens taken so far."""

    def __init__(self, matcher, vocab_size: int, eos_ids: list[int]) -> None:
        self._m = matcher
        self._eos = eos_ids
        self._bits = np.zeros(((vocab_size + 31) // 32,), dtype=np.int32)

    def allowed(self, width: int) -> torch.Tensor:
        """(width,) bool: True for the token ids the grammar allows next (eos only once it is complete)."""
        self._m.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little").astype(bool)
        mask = np.zeros(width, dtype=bool)
        n = min(width, bits.shape[0])
        mask[:n] = bits[:n]
        if not mask.any():  # the grammar is stuck (it should never be): let the sequence end, not emit noise
            mask[self._eos] = True
        return torch.from_numpy(mask)

    def accept(self, token_id: int) -> None:
        """Advance past a sampled token. Tokens the mask allowed are always accepted; eos ends the grammar."""
        if not self._m.is_stopped():
            self._m.consume_token(token_id)


class Guide:
    """A compiled grammar; `matcher()` starts a fresh walk through it (one per sequence)."""

    def __init__(self, tokenizer, grammar: str, eos_ids: list[int], description: str) -> None:
        self._tokenizer, self._grammar, self._eos = tokenizer, grammar, eos_ids
        self.description = description

    def matcher(self) -> Matcher:
        import llguidance

        return Matcher(llguidance.LLMatcher(self._tokenizer, self._grammar), self._tokenizer.vocab_size, self._eos)

    def __repr__(self) -> str:
        return f"Guide({self.description})"


class _SpmTokens:
    """What llguidance's TokenizerWrapper reads: token bytes, BOS/EOS, special ids, and text -> ids."""

    def __init__(self, tokenizer, tokens: list[bytes], eos_ids: list[int]) -> None:
        self._tokenizer, self.tokens = tokenizer, tokens
        self.eos_token_id = eos_ids[0] if eos_ids else tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self.special_token_ids = [i for i, t in enumerate(tokens) if len(t) > 1 and t[0] == 0xFF]  # not <0xFF>

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return self._tokenizer.encode(text, add_special_tokens=False)


class Grammars:
    """The compiler for one tokenizer (building llguidance's token trie takes ~0.2 s: keep one per model)."""

    def __init__(self, tokenizer, eos_ids: list[int]) -> None:
        import llguidance

        self._ll = llguidance
        self.eos_ids = sorted(eos_ids)
        spm = getattr(tokenizer, "spm", None)
        # A GGUF SentencePiece vocabulary without the "▁" prefix (Gemma's 262k tokens): its tokens' bytes, so no
        # `tokenizers` object is built. With the prefix (Llama 2, 32k) llguidance misreads the wrapped tokenizer
        # (it allows a lone "▁" first, then rejects it; tests/text/test_spm.py), so it gets the JSON.
        if spm is not None and not spm.add_space_prefix:
            source = llguidance.TokenizerWrapper(_SpmTokens(tokenizer, spm.token_bytes(), self.eos_ids))
        else:
            source = tokenizer.backend.to_str()
        self._tok = llguidance.LLTokenizer(source, eos_token=self.eos_ids or None)

    def json(self, schema: dict | None = None, *, what: str = "response_format") -> Guide:
        """Any JSON object (schema None, OpenAI's json_object / Ollama's "json"), or a value matching `schema`."""
        if schema is not None and not isinstance(schema, dict):
            raise GrammarError(f"{what}: the JSON schema must be an object, got {type(schema).__name__}")
        schema = {"type": "object"} if schema is None else schema
        grammar = self._compile(lambda: self._ll.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_STYLE), what)
        return Guide(self._tok, grammar, self.eos_ids, f"json {json.dumps(schema)[:60]}")

    def tool_calls(self, tools: list[dict], style: str = "hermes", *, only: str | None = None,
                   parallel: bool = True) -> Guide:
        """One or more calls (exactly one when `only` names the function or `parallel` is False) to the OpenAI
        `tools`, spelled as the model's template expects: "hermes" = <tool_call>{"name", "arguments"}</tool_call>
        blocks (Qwen, Hermes and our text format for templates without tools); "llama3" = one bare JSON
        object {"name", "parameters"}."""
        funcs = [t["function"] for t in tools if only is None or t["function"]["name"] == only]
        if not funcs:
            raise GrammarError(f"tool_choice names function {only!r}, which is not in tools")
        key = "parameters" if style == "llama3" else "arguments"
        call = {"anyOf": [_call_schema(f, key) for f in funcs]} if len(funcs) > 1 else _call_schema(funcs[0], key)
        body = f"%json {json.dumps(call | {'x-guidance': _JSON_STYLE})}"
        if style == "llama3":
            lark = f"start: body\nbody: {body}\n"
        else:
            repeat = "+" if parallel and only is None else ""
            lark = f'start: call{repeat}\ncall: "<tool_call>\\n" body "\\n</tool_call>\\n"\nbody: {body}\n'
        grammar = self._compile(lambda: self._ll.LLMatcher.grammar_from_lark(lark), "tools")
        return Guide(self._tok, grammar, self.eos_ids, f"tool calls ({style}) to {[f['name'] for f in funcs]}")

    def _compile(self, build, what: str) -> str:
        try:
            grammar = build()
        except Exception as e:  # noqa: BLE001 - llguidance raises plain exceptions with a useful message
            raise GrammarError(f"{what}: invalid JSON schema: {_one_line(str(e))}") from None
        error = self._ll.LLMatcher.validate_grammar(grammar, self._tok)
        if error:
            raise GrammarError(f"{what}: invalid JSON schema: {_one_line(error)}")
        return grammar


def tool_call_style(chat_template: str | None) -> str:
    """How a template spells tool calls: Llama 3's bare JSON with "parameters", else Hermes blocks."""
    source = chat_template or ""
    if "<tool_call>" not in source and '"parameters"' in source and "<|python_tag|>" in source:
        return "llama3"
    return "hermes"


def _call_schema(function: dict, key: str) -> dict[str, Any]:
    params = function.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "object", "properties": {"name": {"const": function["name"]}, key: params},
            "required": ["name", key], "additionalProperties": False}


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
