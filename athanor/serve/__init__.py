"""serve/: one HTTP server speaking the OpenAI and the Ollama APIs over the async engine (`athanor serve`)."""
