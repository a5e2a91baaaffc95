"""Node types of the workflow engine; importing this package registers every one of them in NODE_TYPES."""

from athanor.workflow.nodes import basic, external, flow, model  # noqa: F401  (registration side effects)
from athanor.workflow.nodes.base import (
                                         NODE_TYPES,
                                         Node,
                                         NodeResult,
                                         RunContext,
                                         WorkflowError,
                                         WorkflowNodeError,
                                         register,
)

__all__ = ["NODE_TYPES", "Node", "NodeResult", "RunContext", "WorkflowError", "WorkflowNodeError", "register"]
