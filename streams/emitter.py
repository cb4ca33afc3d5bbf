"""Invocations of manual triggers and schedule fires, out to their plugin's topic through Faust's producer.

(Row changes have their own transactional producer: streams/row_changes.py.)
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from faust.types import RecordMetadata

from schemas.invocation import invocation_id_for
from schemas.settings import TopicSettings
from schemas.trigger_request import ManualTriggerRequest
from streams.faust_app import raw_topic
from streams.worker_ops import StreamsOps


class Emitter:
    def __init__(self, app: faust.App, topics: TopicSettings, ops: StreamsOps):
        self.app = app
        self.topics = topics
        self.ops = ops
        self._invoke_topics: dict[str, faust.TopicT] = {}

    async def emit(self, invocation: dict[str, Any]) -> None:
        """Handed to Faust's producer (sent in the background)."""
        await self._send(invocation)

    async def emit_and_wait(self, invocation: dict[str, Any]) -> None:
        """Until Kafka acknowledged it: for emissions followed by a state change that says "done"
        (the timer's last slot), so the state never runs ahead of Kafka."""
        await (await self._send(invocation))

    async def _send(self, invocation: dict[str, Any]) -> Awaitable[RecordMetadata]:
        invocation["created_at"] = datetime.now(UTC).isoformat()
        self.ops.on_emitted(invocation)
        return await self._invoke_topic(invocation["plugin"], invocation.get("priority", "normal")).send(
            key=invocation["invocation_id"].encode(), value=orjson.dumps(invocation)
        )

    def _invoke_topic(self, plugin: str, priority: str) -> faust.TopicT:
        # High priority goes to the plugin's `.high` topic, which runners consume ahead of the
        # normal one, so it never queues behind a backlog in the same partition.
        name = self.topics.invoke(plugin, priority)
        if name not in self._invoke_topics:
            self._invoke_topics[name] = raw_topic(self.app, name)
        return self._invoke_topics[name]


def manual_invocation(request: ManualTriggerRequest) -> dict[str, Any]:
    trigger: dict[str, Any] = {
        "kind": "manual",
        "requested_by": request.requested_by,
        "requested_at": request.requested_at.isoformat(),
        "request_id": request.request_id,
    }
    if request.due_at is not None:  # a delayed trigger released by the leader: its run shows when it was due
        trigger["due_at"] = request.due_at.isoformat()
    return {
        "invocation_id": invocation_id_for("manual", request.request_id, request.plugin),
        "plugin": request.plugin,
        "params": request.params,
        "trigger": trigger,
        "attempt": 1,
        "priority": request.priority,
    }
