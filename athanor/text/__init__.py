"""Text-side helpers shared by training, serving and export: chat-template tables and tokenizer glue."""
