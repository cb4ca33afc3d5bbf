"""cdc.format and the Debezium options of `cdc.format: debezium`, under Debezium's own names and defaults.

    cdc:
      format: debezium
      debezium:
        decimal.handling.mode: string      # precise (default) | double | string
        time.precision.mode: connect       # adaptive_time_microseconds (default) | connect
        bigint.unsigned.handling.mode: long  # long (default) | precise
        binary.handling.mode: bytes        # bytes (default) | base64 | base64-url-safe | hex
        tombstones.on.delete: true

Debezium's topic.prefix is `topics.cdc_prefix` (topics are `<prefix>.<db>.<table>` in both formats).
Options Debezium has that cdcflow does not write yet (schemas.enable, provide.transaction.metadata,
heartbeat.interval.ms, time.precision.mode=isostring) are refused by name rather than ignored.
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
