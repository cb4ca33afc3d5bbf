"""cdc.format and the Debezium options of `cdc.format: debezium`, under Debezium's own names and defaults.

    cdc:
      format: debezium
      debezium:
        decimal.handling.mode: string      # precise (default) | double | string
        time.precision.mode: connect       # adaptive_time_microseconds (default) | connect
        bigint.unsigned.handling.mode: long  # long (default) | precise
        binary.handling.mode: bytes        # bytes (default) | base64 | base64-url-safe | hex
        tombstones.on.delete: true
        heartbeat.interval.ms: 0           # 0 (default): no heartbeat topic
        schemas.enable: false              # true: {"schema", "payload"} as JsonConverter writes them

Debezium's topic.prefix is `topics.cdc_prefix` (topics are `<prefix>.<db>.<table>` in both formats).
Options Debezium has that cdcflow does not write (provide.transaction.metadata, isostring time) are
refused rather than ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Format = Literal["cdcflow", "debezium"]


class DebeziumOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    decimal_handling_mode: Literal["precise", "double", "string"] = Field(
        default="precise", alias="decimal.handling.mode"
    )
    time_precision_mode: Literal["adaptive_time_microseconds", "connect"] = Field(
        default="adaptive_time_microseconds", alias="time.precision.mode"
    )
    bigint_unsigned_handling_mode: Literal["long", "precise"] = Field(
        default="long", alias="bigint.unsigned.handling.mode"
    )
    binary_handling_mode: Literal["bytes", "base64", "base64-url-safe", "hex"] = Field(
        default="bytes", alias="binary.handling.mode"
    )
    tombstones_on_delete: bool = Field(default=True, alias="tombstones.on.delete")
    # 0 = none. Else {"ts_ms": now} under key {"serverName": <topic.prefix>} on
    # __debezium-heartbeat.<topic.prefix> at most this often, as Debezium's heartbeats.
    heartbeat_interval_ms: int = Field(default=0, ge=0, alias="heartbeat.interval.ms")
    # JsonConverter's schemas.enable: key and value as {"schema": ..., "payload": ...}
    schemas_enable: bool = Field(default=False, alias="schemas.enable")

    def heartbeat_topic(self, prefix: str) -> str:
        return f"__debezium-heartbeat.{prefix}"
