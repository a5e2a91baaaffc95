"""Text <-> token ids for the inference path: encode/decode, chat templates, streaming detokenization.

For: loading a Hugging Face tokenizer directory (tokenizer.json + tokenizer_config.json + generation_config.json)
with the `tokenizers` library, rendering the model's own Jinja chat template the way `transformers` does, turning a
stream of generated ids into text without ever emitting half a UTF-8 character. Stop strings: stop.py.

Not for: training tokenizers, batching/padding/tensors (the engine works on plain `list[int]`), or reading GGUF
vocabularies (models/ turns those into a `tokenizers.Tokenizer`, or for SentencePiece ones the compact codec of
text/spm.py, first). It never imports `transformers`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.ext
import tokenizers
from jinja2.sandbox import ImmutableSandboxedEnvironment

from athanor.errors import AthanorError, ModelFormatError
from athanor.text import gotemplate
from athanor.text.gotemplate import is_go_template

if TYPE_CHECKING:
    from athanor.text.spm import SpmCodec

# Generic ChatML, used only when a caller asks for it by name (`chat_template="chatml"`): guessing a format for a
# model that has none would silently produce prompts it was never trained on. Pair it with "<|im_end|>" as a stop.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Prompt tokens decoded as left context for the first generated token (vLLM uses the same number): enough for
# SentencePiece's "▁" and byte-level "Ġ" spaces to decode as they will in the full text.
_PROMPT_CONTEXT = 5
# How much further back to look for a context start that is not in the middle of a multibyte character.
_MAX_CONTEXT_WALKBACK = 8
_REPLACEMENT = "\ufffd"


# ----------------------------------------------------------------------------------------------------------- Jinja


@lru_cache(maxsize=32)
def _parse_go(source: str) -> gotemplate.GoTemplate:
    return gotemplate.parse(source)


def _raise_exception(message: str) -> None:
    # Templates call this for bad input ("roles must alternate ..."): that is the user's error, so say it plainly.
    raise AthanorError(_one_line(str(message)))


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson HTML-escapes <, >, & and ' and forces ASCII; HF's (which templates are written against) doesn't.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _jinja_env() -> ImmutableSandboxedEnvironment:
    # Same settings as transformers, so a template renders byte-for-byte as the model authors saw it. Templates come
    # from downloaded files, hence the sandbox.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def _compile_template(source: str) -> jinja2.Template:
    """Compile once per distinct template source (a server renders the same template for every request)."""
    try:
        return _jinja_env().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise AthanorError(_one_line(f"chat template does not parse: {e.message} (line {e.lineno})")) from e


def _one_line(message: str) -> str:
    return " ".join(message.split())


# ------------------------------------------------------------------------------------------------------- Tokenizer


class Tokenizer:
    """A `tokenizers.Tokenizer` (or a GGUF SentencePiece vocabulary's compact `SpmCodec`) plus what the model
    directory says about BOS/EOS, stop ids and the chat template."""

    def __init__(self, backend: tokenizers.Tokenizer | SpmCodec, *, bos_token: str | None = None,
                 eos_token: str | None = None, chat_template: str | None = None, add_bos_token: bool = False,
                 stop_token_ids: Iterable[int] = ()) -> None:
        # encode/decode/vocabulary go to the codec when there is one; `backend` is then built on first use
        self._spm = backend if hasattr(backend, "to_tokenizers") else None
        self._backend = None if self._spm is not None else backend
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.chat_template = chat_template
        self.add_bos_token = add_bos_token
        self.bos_token_id = self._special_id(bos_token)
        self.eos_token_id = self._special_id(eos_token)
        self.stop_token_ids: set[int] = {int(i) for i in stop_token_ids}
        if self.eos_token_id is not None:
            self.stop_token_ids.add(self.eos_token_id)
        # Named templates (tokenizer_config's list form, additional_chat_templates/): a caller may pick one by name.
        self.named_chat_templates: dict[str, str] = {}

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The `tokenizers.Tokenizer` (for a GGUF SentencePiece vocabulary: its equivalent, built on first use and
        kept -- ~72 MiB for Gemma 3's 262k tokens -- so only training and export paths should reach for it)."""
        return self._spm.to_tokenizers() if self._spm is not None else self._backend

    @property
    def _codec(self) -> tokenizers.Tokenizer | SpmCodec:
        return self._spm if self._spm is not None else self._backend

    @property
    def spm(self) -> SpmCodec | None:
        """The compact SentencePiece codec behind encode/decode, or None (a `tokenizers` backend)."""
        return self._spm

    def _special_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        token_id = self.token_to_id(token)
        if token_id is None:
            raise ModelFormatError(f"special token {token!r} is not in the tokenizer's vocabulary")
        return token_id

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> Tokenizer:
        """Load a Hugging Face tokenizer directory; only tokenizer.json is required."""
        path = Path(path)
        backend = _load_backend(path / "tokenizer.json")
        config = _read_json(path / "tokenizer_config.json")
        generation = _read_json(path / "generation_config.json")
        bos_token = _token_content(config.get("bos_token"))
        named = _named_templates(path, config)
        tok = cls(
            backend,
            bos_token=bos_token,
            eos_token=_token_content(config.get("eos_token")),
            chat_template=named.get("default"),
            add_bos_token=_adds_bos(backend, bos_token, config),
            stop_token_ids=_generation_eos_ids(generation),
        )
        tok.named_chat_templates = named
        return tok

    # -- vocabulary

    @property
    def vocab_size(self) -> int:
        if self._spm is not None:
            return len(self._spm)
        return self._backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._codec.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._codec.id_to_token(int(i))

    # -- text <-> ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        # The backend's post-processor is bypassed: `add_bos_token` (derived from it in from_hf_dir) is the one
        # switch, so a rendered chat prompt that already starts with BOS never gets a second one.
        # encode_batch releases the GIL (encode holds it): a huge prompt encoded in a worker thread leaves the
        # server's event loop free; one sequence gives the same ids either way
        if self._spm is not None:
            ids = self._spm.encode(text)  # (a C call: ctypes releases the GIL too)
        else:
            ids = self._backend.encode_batch([text], add_special_tokens=False)[0].ids
        wants_bos = add_special_tokens and self.add_bos_token and self.bos_token_id is not None
        if wants_bos and (not ids or ids[0] != self.bos_token_id):
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._codec.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # -- chat

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True,
                            tools: list[dict] | None = None, chat_template: str | None = None, **extra: Any) -> str:
        """Render `messages` with the model's template (or `chat_template`: a source, a name, or "chatml"): Jinja,
        or an Ollama Go template (a Modelfile TEMPLATE), which renders as Ollama would and always ends with the
        assistant's turn."""
        source = self._pick_template(chat_template, tools)
        if is_go_template(source):
            if not add_generation_prompt:
                raise AthanorError("an Ollama Go template always ends with the assistant's turn; "
                                   "add_generation_prompt=False needs a Jinja chat template")
            return gotemplate.render_prompt(_parse_go(source), messages, tools, extra.get("enable_thinking"),
                                            str(extra.get("reasoning_effort") or ""))
        template = _compile_template(source)
        # Like transformers: drop None-valued keys (OpenAI clients send content=None with tool_calls), which
        # templates handle as "missing" but would otherwise render as the text "None".
        messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
        # Special tokens first, so a caller's extra of the same name wins (transformers' order); unset ones stay
        # undefined (renders as "") rather than None (renders as "None").
        variables = {k: v for k, v in (("bos_token", self.bos_token), ("eos_token", self.eos_token)) if v is not None}
        # transformers always passes `documents` (RAG templates test `documents is not none`), None by default.
        variables.update({"documents": None, **extra})
        try:
            return template.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                   **variables)
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as e:
            # Bad input a template did not anticipate (a list where it concatenates a string, a missing key).
            raise AthanorError(_one_line(f"chat template failed to render: {type(e).__name__}: {e}")) from e

    def _pick_template(self, chat_template: str | None, tools: list[dict] | None) -> str:
        if chat_template == "chatml":
            return CHATML_TEMPLATE
        if chat_template is not None:
            return self.named_chat_templates.get(chat_template, chat_template)
        if tools and "tool_use" in self.named_chat_templates:  # transformers' rule for the list form
            return self.named_chat_templates["tool_use"]
        if self.chat_template is None:
            raise AthanorError("this model has no chat template; pass chat_template='chatml' for generic ChatML "
                               "or a Jinja template string, or send a plain completion prompt")
        return self.chat_template

    def encode_chat(self, messages: list[dict], **kw: Any) -> list[int]:
        # Jinja templates write BOS themselves ("{{ bos_token }}"), so the encoder must not add another; Ollama's
        # Go templates leave BOS to the tokenizer (llama.cpp adds it), and encode() never doubles it.
        go = is_go_template(self._pick_template(kw.get("chat_template"), kw.get("tools")))
        return self.encode(self.apply_chat_template(messages, **kw), add_special_tokens=go)


# ------------------------------------------------------------------------------------------ loading (from_hf_dir)


def _load_backend(file: Path) -> tokenizers.Tokenizer:
    if not file.is_file():
        raise AthanorError(f"no tokenizer.json in {file.parent}; athanor needs a Hugging Face 'fast' tokenizer file")
    try:
        return tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust side raises a bare Exception for any parse error
        raise ModelFormatError(_one_line(f"cannot read {file}: {e}")) from e


def _read_json(file: Path) -> dict:
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(_one_line(f"{file} is not valid JSON: {e}")) from e
    if not isinstance(data, dict):
        raise ModelFormatError(f"{file} should hold a JSON object")
    return data


def _token_content(value: Any) -> str | None:
    """bos_token/eos_token are a string or a serialized AddedToken ({"__type": "AddedToken", "content": ...})."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _named_templates(path: Path, config: dict) -> dict[str, str]:
    """All chat templates of a directory by name; the unnamed one is "default" (transformers' convention)."""
    raw = config.get("chat_template")
    named = {t["name"]: t["template"] for t in raw} if isinstance(raw, list) else {}
    if isinstance(raw, str):
        named["default"] = raw
    processor_template = _read_json(path / "chat_template.json").get("chat_template")
    if isinstance(processor_template, str):
        named["default"] = processor_template
    # Newer transformers save templates as files; like transformers, those win over tokenizer_config.json.
    extra_dir = path / "additional_chat_templates"
    for file in sorted(extra_dir.glob("*.jinja")) if extra_dir.is_dir() else []:
        named[file.stem] = file.read_text(encoding="utf-8")
    if (path / "chat_template.jinja").is_file():
        named["default"] = (path / "chat_template.jinja").read_text(encoding="utf-8")
    return named


def _adds_bos(backend: tokenizers.Tokenizer, bos_token: str | None, config: dict) -> bool:
    # transformers decides with the post-processor in tokenizer.json (Llama 3 has no add_bos_token key at all);
    # an explicit add_bos_token=true is honoured too, as older Llama tokenizer classes did.
    if bos_token is None:
        return False
    probe = backend.encode("", add_special_tokens=True).ids
    post_processor_adds_bos = bool(probe) and probe[0] == backend.token_to_id(bos_token)
    return post_processor_adds_bos or config.get("add_bos_token") is True


def _generation_eos_ids(generation: dict) -> list[int]:
    eos = generation.get("eos_token_id")
    if eos is None:
        return []
    return [int(i) for i in (eos if isinstance(eos, list) else [eos])]


# --------------------------------------------------------------------------------------- streaming detokenization


class IncrementalDetokenizer:
    """Turns one sequence's generated ids into text pieces, one `push` per token.

    Each push decodes a small window of ids twice, with and without the new one, and emits the difference
    (vLLM's `detokenize_incrementally`). The left context makes spaces come out right: SentencePiece and byte-level
    decoders treat the first token of a string specially, so decoding a token alone would lose its leading space.
    Text ending in U+FFFD is a multibyte character split across tokens: it is held back until complete.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = [int(i) for i in prompt_ids]
        self.read_offset = len(self.ids)  # ids[:read_offset] are already emitted (or are prompt)
        self.prefix_offset = self._context_start()  # ids[prefix_offset:read_offset] are left context
        self.text = ""

    def _context_start(self) -> int:
        # Start the context on a character boundary: a window that opens mid-character decodes as U+FFFD, and
        # byte-fallback decoders may then garble the following complete characters too.
        start = max(self.read_offset - _PROMPT_CONTEXT, 0)
        lowest = max(start - _MAX_CONTEXT_WALKBACK, 0)
        while start > lowest and self._decode(start, self.read_offset).startswith(_REPLACEMENT):
            start -= 1
        return start

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self.ids[start:end], skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one generated id; return the text it completes ("" while a character or a space is pending)."""
        self.ids.append(int(token_id))
        return self._emit(final=False)

    def flush(self) -> str:
        """End of sequence: return whatever was held back (a dangling partial character comes out as U+FFFD)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        prefix_text = self._decode(self.prefix_offset, self.read_offset)
        new_text = self._decode(self.prefix_offset, len(self.ids))
        if len(new_text) <= len(prefix_text) or (new_text.endswith(_REPLACEMENT) and not final):
            return ""
        delta = new_text[len(prefix_text):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self.text += delta
        return delta
