"""Model formats (GGUF, Hugging Face dirs), the Modelfile and the named-model store."""
