"""Schemathesis over the API's whole OpenAPI document, against the running server on the real stack,
with an admin token: every generated request (valid and invalid ones) must get a documented answer
that matches its schema, and never a 5xx."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import isolated_config_data, remove_test_resources, write_config
from tests.support.api import api_server

MIN_REQUESTS = 1000
EXAMPLES_PER_OPERATION = 40  # in each mode: valid requests, and requests that break the schema
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# the event stream never ends: it has its own test
SKIPPED_PATHS = {"/api/events"}
# What the API promises: no 5xx, and every answer documented (status, media type, headers, body schema).
# Not Schemathesis' heuristics about which schema-valid input must succeed: a topic that does not
# exist or a regex that does not compile fits a string schema and is still refused (404/422, named).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_fuzzing_the_whole_api_finds_no_server_error(tmp_path: Path) -> None:
    rules = {
        "monitored_tables": {"orders": {"triggers": ["echo"], "conditions": {"status": "paid"}}},
        "schedules": {"nightly": {"plugin": "echo", "cron": "0 3 * * *"}},
        "api": {"rate_limit_per_second": 100000, "rate_limit_burst": 100000},
    }
    config = write_config(tmp_path, isolated_config_data("apifuzz", rules))
    statuses: Counter[int] = Counter()
    try:
        with api_server(config, tmp_path / "api.log") as server:
            schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
            headers = {"Authorization": f"Bearer {server.tokens['admin']}"}
            operations = [r.ok() for r in schema.get_all_operations()]
            for operation, mode in itertools.product(operations, MODES):
                if operation.path in SKIPPED_PATHS:
                    continue

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=EXAMPLES_PER_OPERATION,
                    deadline=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                    database=None,
                )
                def check(case: schemathesis.Case) -> None:
                    response = case.call(headers=headers, timeout=60)
                    statuses[response.status_code] += 1
                    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"
                    case.validate_response(response, checks=CHECKS)

                check()
    finally:
        remove_test_resources(config.settings, [])
    total = sum(statuses.values())
    print(f"fuzzing: {total} requests, by status: {dict(sorted(statuses.items()))}")
    assert total >= MIN_REQUESTS
    assert not any(code >= 500 for code in statuses)
