"""What the worker makes of a message on the triggers topic that it cannot turn into an invocation.

`cdcflow trigger` and the API check a request before sending it, but anyone can write to the topic.
A request that names a plugin (a name a plugin can have) and a request id gets a `rejected` result
under the invocation id it would have had, recorded in Redis and published on the results topic as
the runners record theirs: `cdcflow trigger --wait` and the API's ?wait= answer with the reason. One
that names no such pair is a logged skip naming topic, partition and offset (nothing to record it
against). Either way the partition moves on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

import faust
import orjson
import redis
from pydantic import ValidationError

from plugins.execution import rejected_result
from plugins.store import RunStore
from schemas.errors import from_validation_error
from schemas.invocation import invocation_id_for
from schemas.manifest import PLUGIN_NAME_PATTERN, json_unsafe
from schemas.result import Result
from schemas.runtime.kafka_topics import INVOKE_MAX_MESSAGE_BYTES
from schemas.settings import Settings
from schemas.trigger_request import ManualTriggerRequest
from streams.faust_app import raw_topic

log = logging.getLogger("cdcflow.streams")

_PLUGIN_NAME = re.compile(PLUGIN_NAME_PATTERN)
MAX_REQUEST_ID_CHARS = 256  # request ids are uuids; a longer one is no id (and an unbounded key)
MAX_TOPIC_CHARS = 249  # Kafka's limit on a topic name


@dataclass
class Refusal:
    """Why a message is not a request to act on (starting with where it is), and whom to tell
    (None: nobody can be named)."""

    why: str
    request_id: str | None = None
    plugin: str | None = None

    def invocation_id(self) -> str | None:
        if self.request_id is None or self.plugin is None:
            return None
        return invocation_id_for("manual", self.request_id, self.plugin)


def check_request(settings: Settings, value: bytes | None, where: str) -> ManualTriggerRequest | Refusal:
    """The request, or why not (with the plugin and request id to record the refusal under, when usable)."""
    try:
        request = ManualTriggerRequest.model_validate_json(value or b"")
    except ValidationError as e:
        return Refusal(str(from_validation_error(where, e)), *_claimed(settings, value or b""))
    if not _usable(settings, request.request_id, request.plugin):
        return Refusal(f"{where}: no plugin can be named {request.plugin[:100]!r}, or the request id is unusable")
    problem = json_unsafe(request.params, "params")
    if problem is not None:
        return Refusal(f"{where}: {problem}", request.request_id, request.plugin)
    return request


def too_large(settings: Settings, invocation: dict[str, Any]) -> str | None:
    """Why the invocation cannot go to its plugin's topic (larger than the plugins' topics take), or None."""
    size = len(orjson.dumps(invocation)) + len(invocation["invocation_id"])
    if size <= INVOKE_MAX_MESSAGE_BYTES:
        return None
    topic = settings.topics.invoke(invocation["plugin"], invocation["priority"])
    return f"{topic} takes messages of up to {INVOKE_MAX_MESSAGE_BYTES} bytes; this invocation is {size} bytes"


def _claimed(settings: Settings, value: bytes) -> tuple[str | None, str | None]:
    """(request id, plugin) a malformed message names, when both are usable to record a result under."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, None
    request_id, plugin = (data.get("request_id"), data.get("plugin")) if isinstance(data, dict) else (None, None)
    return (request_id, plugin) if _usable(settings, request_id, plugin) else (None, None)


def _usable(settings: Settings, request_id: Any, plugin: Any) -> bool:
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > MAX_REQUEST_ID_CHARS:
        return False
    return plugin_name_usable(settings, plugin)


def plugin_name_usable(settings: Settings, plugin: Any) -> bool:
    """A name a plugin can have, whose topics Kafka can name. The name becomes a topic name (and Redis
    keys): an invalid topic name makes Faust's producer retry forever and topic creation fail."""
    if not isinstance(plugin, str) or not _PLUGIN_NAME.match(plugin):
        return False
    return len(settings.topics.invoke(plugin, "high")) <= MAX_TOPIC_CHARS


class Rejections:
    """Records rejected trigger requests: Redis first, then the results topic (as the runners do)."""

    def __init__(self, app: faust.App, settings: Settings):
        self.settings = settings
        self._store: RunStore | None = None  # made at the first rejection: most workers never see one
        self._results = raw_topic(app, settings.topics.results)

    async def reject(self, refusal: Refusal, error_type: str = "InvalidTrigger") -> Result:
        iid, plugin = refusal.invocation_id(), refusal.plugin
        assert iid is not None and plugin is not None
        result = rejected_result(iid, plugin, "", error_type, refusal.why, trigger_kind="manual")
        if self._store is None:
            self._store = RunStore(self.settings)
        store = self._store
        while True:  # Redis down is no poison: wait for it, as the runners do (the offset stays uncommitted)
            try:
                await asyncio.to_thread(store.record, result)
                break
            except redis.RedisError as e:
                log.error("cannot record the rejection of %s in Redis (%s); retrying in 1s", iid, e)
                await asyncio.sleep(1.0)
        await (await self._results.send(key=iid.encode(), value=result.model_dump_json().encode()))
        return result
