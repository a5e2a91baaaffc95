"""Errors of the workflow package (re-exported by nodes/base.py, where node authors look for them).

Kept in their own module so pool.py and dsl.py can raise them without importing the node registry.
"""

from athanor.errors import AthanorError


class WorkflowError(AthanorError):
    """A workflow file or run request that is wrong (bad DSL, unknown app, bad input)."""


class WorkflowNodeError(AthanorError):
    """A node failed at run time; the engine applies the node's error strategy."""
