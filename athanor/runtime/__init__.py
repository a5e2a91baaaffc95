"""The runtime room: the one model registry per process and the text face of an engine."""
