"""llm/: the only way the app layer reaches a model (see base.py for the protocol and the model-spec grammar)."""

from athanor.llm.base import ChatDelta, ChatModel, ChatResponse, ToolCall, Usage, load_chat_model

__all__ = ["ChatDelta", "ChatModel", "ChatResponse", "ToolCall", "Usage", "load_chat_model"]
