"""agent/: tools, the ReAct agent, memory and the `athanor agent` command (see each module)."""
