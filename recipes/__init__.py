"""Shipped recipes whose code is not part of the athanor package (run from the repository root)."""
