"""athanor: one package for the whole life of an open LLM (data, fine-tune, export, serve, agents, RAG).

This top-level module stays import-light so `athanor --help` is instant; heavy parts load lazily.
"""

__version__ = "0.1.0"
