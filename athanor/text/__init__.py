"""The text room: tokenizer, chat templates (Jinja and Go; LLaMA-Factory's named templates), tool-call formats, stop
strings, grammar."""
