"""The text room: tokenizer, chat templates (Jinja and Go), tool-call formats, stop strings, grammar."""
