"""Node types that exist only for the workflow tests (registered on import; imported under one name only).

test-barrier proves branches run at the same time, test-flaky fails a set number of times, test-sleep waits.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from athanor.workflow.nodes.base import Node, NodeResult, WorkflowNodeError, register


@register
class BarrierNode(Node):
    """Passes only when `parties` nodes of its kind wait at the barrier at the same time (proves concurrency)."""

    type = "test-barrier"
    barriers: ClassVar[dict] = {}

    def run(self, ctx):
        barrier = self.barriers[self.data["barrier"]]
        try:
            barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            raise WorkflowNodeError("branches did not run concurrently") from None
        return NodeResult(outputs={"ok": True})


@register
class FlakyNode(Node):
    """Fails its first `failures` runs (counted per key), then succeeds."""

    type = "test-flaky"
    calls: ClassVar[dict] = {}

    def run(self, ctx):
        key = self.data["key"]
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] <= self.data["failures"]:
            raise WorkflowNodeError(f"flaky failure {self.calls[key]}")
        return NodeResult(outputs={"value": "recovered", "attempts": self.calls[key]})


BLOCK_RELEASE = threading.Event()  # test-block nodes wait for it (30 s at most)
BLOCK_FINISHED: list[str] = []  # ids of test-block nodes that returned


@register
class BlockNode(Node):
    type = "test-block"

    def run(self, ctx):
        BLOCK_RELEASE.wait(30)
        BLOCK_FINISHED.append(self.id)
        return NodeResult(outputs={"released": BLOCK_RELEASE.is_set()})


@register
class SleepNode(Node):
    type = "test-sleep"

    def run(self, ctx):
        time.sleep(self.data["seconds"])
        return NodeResult(outputs={"slept": self.data["seconds"]})
