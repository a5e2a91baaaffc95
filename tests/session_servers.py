"""Which registries and tracers belong to session-scoped servers (one module, imported by name from both conftests:
tests/conftest.py hides them from tests that do not use those servers, tests/e2e/conftest.py marks them)."""

from __future__ import annotations

SESSION_SERVERS = {"server"}  # session-scoped server fixtures (tests/e2e/conftest.py)
SESSION_OWNED: list = []  # their apps' registries and tracers


def session_owned(app) -> None:
    """Mark a session-scoped server's registry and tracer: tests that do not use that server do not see them."""
    SESSION_OWNED.extend([app.state.manager, app.state.tracing])
