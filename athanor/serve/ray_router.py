"""AffinityRouter: a Ray Serve request router that picks an engine replica for each request.

Two rules, in order:
1. **conversation / prefix affinity**: requests with the same `affinity_key` (the gateway derives it from the
   model and the conversation's opening messages, or the prompt's first characters) go to the replica that served
   that key before, whose prefix cache already holds those tokens, unless that replica carries more than
   `imbalance_tokens` outstanding tokens above the least loaded one (then the key moves);
2. **least outstanding tokens** otherwise: the replica with the fewest tokens in flight (each request counts the
   gateway's estimate of prompt + max new tokens from routing until it completes); ties go to a random replica.
The router lives in the process holding the handle (the gateway) and sees every request it sends, so its counts
are exact for that gateway; with several gateways each balances its own share.
Not for: HTTP (ray_app.py) or engine scheduling inside a replica (engine/scheduler.py).
Uses Ray Serve's public `RequestRouter` extension point; `_choose_replica_for_request` is wrapped to learn which
replica a request went to (Ray does not call `on_request_routed` on every path).
"""

from __future__ import annotations

import importlib
import random
from collections import OrderedDict

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

ROUTERS: list = []  # the routers living in this process (the gateway's), for its /-/routing status route
MAX_AFFINITY_KEYS = 100_000  # remembered conversations (least recently used forgotten first)
DEFAULT_IMBALANCE_TOKENS = 16_384  # affinity yields when its replica is this far above the least loaded one


def hints(pending_request: PendingRequest | None) -> tuple[str | None, int]:
    """(affinity key, token cost) the gateway put in the request dict (first positional argument)."""
    if pending_request is None or not pending_request.args or not isinstance(pending_request.args[0], dict):
        return None, 1
    req = pending_request.args[0]
    return req.get("affinity_key"), max(1, int(req.get("cost") or 1))


class AffinityRouter(RequestRouter):
    def initialize_state(self, imbalance_tokens: int = DEFAULT_IMBALANCE_TOKENS, **kwargs) -> None:
        self.imbalance_tokens = imbalance_tokens
        self.outstanding: dict[ReplicaID, int] = {}  # replica -> tokens of requests routed and not completed
        self.in_flight: dict[str, tuple[ReplicaID, int]] = {}  # internal request id -> (replica, cost)
        self.affinity: OrderedDict[str, ReplicaID] = OrderedDict()
        # Ray may ship this class by value (cloudpickle), giving it a copy of this module's globals: register in
        # the imported module, where the gateway's status route looks
        importlib.import_module(__name__).ROUTERS.append(self)

    def status(self) -> dict:
        """Per replica: outstanding tokens and requests routed here and not completed (JSON-ready)."""
        rows: dict[str, dict] = {}
        for rid, _ in self.in_flight.values():
            rows.setdefault(rid.unique_id, {"outstanding_tokens": 0, "requests": 0})["requests"] += 1
        for rid, tokens in self.outstanding.items():
            rows.setdefault(rid.unique_id, {"outstanding_tokens": 0, "requests": 0})["outstanding_tokens"] = tokens
        return {"replicas": rows, "conversations": len(self.affinity)}

    def _load(self, replica: RunningReplica) -> int:
        return self.outstanding.get(replica.replica_id, 0)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        """Ranks of replicas, best first: the affine one (if any and not overloaded), then by outstanding tokens."""
        if not candidate_replicas:
            return []
        key, _ = hints(pending_request)
        ordered = sorted(candidate_replicas, key=lambda r: (self._load(r), random.random()))
        least = self._load(ordered[0])
        affine = self.affinity.get(key) if key else None
        for r in ordered:
            if r.replica_id == affine and self._load(r) - least <= self.imbalance_tokens:
                return [[r]] + [[x] for x in ordered if x is not r]
        return [[x] for x in ordered]

    async def _choose_replica_for_request(self, pending_request: PendingRequest, *args, **kwargs) -> RunningReplica:
        replica = await super()._choose_replica_for_request(pending_request, *args, **kwargs)
        key, cost = hints(pending_request)
        self.in_flight[pending_request.metadata.internal_request_id] = (replica.replica_id, cost)
        self.outstanding[replica.replica_id] = self.outstanding.get(replica.replica_id, 0) + cost
        if key:
            self.affinity[key] = replica.replica_id
            self.affinity.move_to_end(key)
            while len(self.affinity) > MAX_AFFINITY_KEYS:
                self.affinity.popitem(last=False)
        return replica

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        routed = self.in_flight.pop(internal_request_id, None)
        if routed is not None:
            rid, cost = routed
            self.outstanding[rid] = max(0, self.outstanding.get(rid, 0) - cost)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.outstanding.pop(replica_id, None)
        for key in [k for k, rid in self.affinity.items() if rid == replica_id]:
            del self.affinity[key]  # those conversations re-home on their next turn
