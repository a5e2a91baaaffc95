"""Knowledge bases: ingest files, hybrid search with citations, crash-safe incremental updates (`athanor kb`).

Import `KnowledgeBase` from `athanor.rag.kb`; this package itself imports nothing heavy.
"""
