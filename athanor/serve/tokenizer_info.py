"""`GET /tokenizer_info` and the model a tokenizer route uses when the request names none.

lm-evaluation-harness (`local-completions`, tokenizer_backend "remote"/"auto") probes `GET /tokenizer_info` and
calls `POST /tokenize` / `/detokenize` without a model name, as vLLM serves them for its one model. Here the
server may hold several: the one loaded model is used, else the store's only model; otherwise the client is told
to name one (`?model=` / `"model"`). Not for /tokenize itself (openai_api.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from athanor.serve.errors import ServeError

router = APIRouter()


def default_model_name(manager, name: str | None) -> str:
    """`name`, or the one model a request without a name can only mean (400 when that is ambiguous)."""
    if name:
        return name
    loaded = list(manager.models)
    if len(loaded) == 1:
        return loaded[0]
    listed = [m.name for m in manager.store.list() if not (m.is_builtin and not m.weights)]
    if not loaded and len(listed) == 1:
        return listed[0]
    choices = loaded or listed
    raise ServeError(f"model: this server has {len(choices)} models ({', '.join(choices[:5])}); name one", 400,
                     "model")


@router.get("/tokenizer_info")
async def tokenizer_info(request: Request, model: str | None = None):
    """vLLM's fields: the special tokens, the chat template, the context length (`model_max_length`)."""
    manager = request.app.state.manager
    loaded = await manager.acquire(default_model_name(manager, model))
    try:
        tok = loaded.llm.tokenizer
        return {"model": loaded.name, "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tok.bos_token,
                "eos_token": tok.eos_token, "pad_token": tok.eos_token, "unk_token": None,
                "chat_template": tok.chat_template, "add_bos_token": tok.add_bos_token,
                "model_max_length": loaded.max_model_len, "vocab_size": tok.vocab_size}
    finally:
        manager.release(loaded)
