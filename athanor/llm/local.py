"""LocalChatModel: the ChatModel protocol over athanor's own engine, in-process (no HTTP).

For: agents, workflows and RAG running a model in the same process (`load_chat_model("smollm2")`).
Options are OpenAI / Ollama names (temperature, top_p, max_tokens, stop, seed, num_predict, ...) handed to
`LLM.sampling_params`, so unknown names raise the engine's one-line error.

Tools: `tools` are rendered into the prompt by the model's own chat template when it uses `tools` (so a
tool-trained model sees them in its trained format); for a template that ignores them (SmolLM2's), they are
listed as JSON in the system message instead, never silently dropped. The reply is searched for tool calls in
the Hermes/Qwen `<tool_call>` or Llama-3 JSON formats (tool_parsing.py); with tools, the text is delivered in
one piece at the end so call markup never leaks into streamed text. A model that writes calls in another
format returns them as text; the ReAct agent (agent/react.py) works with any model.
`embed` is `LLM.embed`: the L2-normalised mean of the model's last hidden states (what `athanor serve` answers on
/v1/embeddings). A generative model is not a trained sentence embedder; use a real embedder for RAG.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from athanor.text.chat_format import adapt_to_template
from athanor.llm.base import ChatDelta, ChatResponse, Usage, collect
from athanor.text.tool_parsing import parse_tool_calls


class LocalChatModel:
    def __init__(self, llm, name: str | None = None) -> None:
        self.llm = llm
        self.name = name or llm.name
        self._lock = threading.Lock()  # one engine, stepped by one caller at a time

    @classmethod
    def load(cls, name_or_path: str, config=None, **defaults) -> LocalChatModel:
        """A store name or a .gguf / HF-dir path -> model. `config` is an EngineConfig; defaults are options."""
        from athanor.engine.config import EngineConfig
        from athanor.runtime.llm import LLM

        config = config or EngineConfig(kv_cache_bytes=64 * 2**20)
        return cls(LLM.load(name_or_path, config, **defaults), name=name_or_path)

    def chat(self, messages: list[dict], *, tools: list[dict] | None = None, **options) -> ChatResponse:
        return collect(self.stream(messages, tools=tools, **options))

    def stream(self, messages: list[dict], *, tools: list[dict] | None = None, **options) -> Iterator[ChatDelta]:
        params = self.llm.sampling_params({k: v for k, v in options.items() if v is not None})
        messages, _ = adapt_to_template(self.llm.tokenizer, messages, tools)  # the format training uses
        prompt_ids = self.llm.chat_prompt(messages, tools=tools or None)
        with self._lock:
            for delta in self.llm.stream(prompt_ids, params):
                if delta.completion is None:
                    if not tools:
                        yield ChatDelta(text=delta.text)
                    continue
                c = delta.completion
                usage = Usage(c.num_prompt_tokens, len(c.token_ids))
                if not tools:
                    yield ChatDelta(text=delta.text, finish_reason=c.finish_reason, usage=usage)
                    continue
                names = {t.get("function", t).get("name") for t in tools}
                text, calls = parse_tool_calls(c.text, names)
                yield ChatDelta(text=text, tool_calls=calls, finish_reason="tool_calls" if calls else c.finish_reason,
                                usage=usage)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.llm.embed(texts)[0]
