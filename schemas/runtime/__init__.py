"""The plumbing every part shares, next to the contracts it serves: logging and secret masking,
heartbeat records and the metrics/health server, alerts, Kafka topic creation, CLI config loading.

It imports only `schemas` (never a part, never the console), so cdc, streams and plugins can all
use it without an import climbing back up. The contracts themselves stay one level up.
"""
