"""The inference engine: tokens in, tokens out (after vLLM and nano-vllm). No HTTP, no chat templates here."""
