"""Schemathesis fuzzes every route of the OpenAPI schema against a real server: no input may cause a 5xx, and
every answer matches the schema (status codes, content types, bodies; errors in the API's own shape).

A separate server and store (created/copied/deleted names stay there). Bounded examples per operation so the
whole run stays within seconds; model names are mostly random, so this exercises validation and error paths
(generation itself is covered by the client tests)."""

from __future__ import annotations

import pytest

from athanor.serve.app import create_app
from tests.e2e.conftest import make_store, small_engine_config, start_server

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES_PER_OPERATION = 15


def test_no_server_errors(tmp_path, tiny_hf_dir):
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    app = create_app(store=make_store(tmp_path, tiny_hf_dir), engine_config=small_engine_config())
    with start_server(app) as s:
        schema = schemathesis.openapi.from_url(f"{s.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20  # every route is in the schema

        CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                  response_schema_conformance]
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                      database=None)
            def fuzz(case):
                case.call_and_validate(checks=CHECKS, timeout=30)

            fuzz()
