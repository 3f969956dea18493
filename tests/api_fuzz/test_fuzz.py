"""schemathesis over every service's OpenAPI and the gateway's own routes: the examples,
coverage and fuzzing phases per operation (one pytest item each), then the stateful phase per
service, with every default check plus `problem_json_on_4xx`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import BaseSchema, Case, CheckContext, Response

import campaigns.app as campaigns_app
import commissions.app as commissions_app
import contacts.app as contacts_app
import gateway.app as gateway_app
import pipeline.app as pipeline_app
import tickets.app as tickets_app
from gateway import openapi as gateway_openapi
from gateway.settings import GatewaySettings

# Small and seeded, so a CI run is bounded (< 4 minutes for the directory on 2 cores) and
# reproducible; FUZZ_MAX_EXAMPLES=50 for a deeper run.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "5"))
SEED = 20261126
# The stateful phase: scenarios per service and calls per scenario.
STATEFUL_SCENARIOS = int(os.environ.get("FUZZ_STATEFUL_SCENARIOS", "20"))
STATEFUL_STEPS = 10
# Marks which app a document came from, so a case knows where to send itself.
SERVICE_KEY = "x-fuzz-service"

_BUILDERS: dict[str, tuple[Any, Any]] = {
    "contacts": (contacts_app.build, contacts_app.ContactsSettings),
    "pipeline": (pipeline_app.build, pipeline_app.PipelineSettings),
    "commissions": (commissions_app.build, commissions_app.CommissionsSettings),
    "tickets": (tickets_app.build, tickets_app.TicketsSettings),
    "campaigns": (campaigns_app.build, campaigns_app.CampaignsSettings),
    "gateway": (gateway_app.build, GatewaySettings),
}


def _unstarted_app(name: str) -> FastAPI:
    """The app as `build` makes it, never started: enough for its OpenAPI document."""
    build, settings_cls = _BUILDERS[name]
    extra: dict[str, Any] = {"upstreams": {}} if name == "gateway" else {}
    settings = settings_cls(
        service_name=name,
        env="test",
        database_url="postgresql+asyncpg://unused@127.0.0.1:1/unused",
        nats_url="nats://127.0.0.1:1",
        jwks_file=Path("/nonexistent/jwks.json"),
        **extra,
    )
    return build(settings)  # type: ignore[no-any-return]


def document(name: str) -> dict[str, Any]:
    """The OpenAPI document the running app serves. Built at import (collection needs the
    operations before the stack runs); `test_documents_match_served` keeps it honest. The
    gateway's is its own routes merged with no upstream: its upstream routes are fuzzed on
    the services directly."""
    app = _unstarted_app(name)
    doc = app.openapi()
    if name == "gateway":
        doc = gateway_openapi.merge(doc, {}, [])
    return {**doc, SERVICE_KEY: name}


def problem_json_on_4xx(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every client error is RFC 9457 problem+json (ARCHITECTURE.md section 3)."""
    if 400 <= response.status_code < 500:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.split(";")[0].strip() == "application/problem+json", (
            f"{response.status_code} answered with content-type {content_type!r}"
        )
    return None


CONFIG: dict[str, Any] = {
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
    "phases": {"coverage": {"enabled": os.environ.get("FUZZ_COVERAGE", "1") == "1"}},
    "checks": {
        # Input valid by the schema may still break a rule no JSON Schema states: a referenced
        # id that does not exist, `to` before `from`, an opaque cursor the API did not issue,
        # a stale or missing If-Match. Those answer 422/412/428, not a success.
        "positive_data_acceptance": {
            "expected-statuses": ["2xx", "401", "403", "404", "409", "412", "422", "428"]
        },
        # Off: pydantic's lax mode accepts more than the documents state ("5" for an
        # integer, 0.5 for a date-time: seconds since the epoch), by design, not by a bug.
        "negative_data_rejection": {"enabled": False},
    },
    "operations": [
        {
            # `POST /v1/contacts/batch` and `PATCH /v1/contacts/{contact_id}`: a PATCH of
            # `/batch` is routed to the latter and fails its UUID check (422), not a 405.
            "include-path-regex": "/(batch|imports|preview)$",
            "checks": {"unsupported_method": {"enabled": False}},
        }
    ],
}
NAMES = ("contacts", "pipeline", "commissions", "tickets", "campaigns", "gateway")
SCHEMAS: dict[str, BaseSchema] = {
    name: schemathesis.openapi.from_dict(
        document(name), config=schemathesis.Config.from_dict(CONFIG)
    )
    for name in NAMES
}


@pytest.mark.parametrize("name", NAMES)
def test_documents_match_served(name: str, fuzz_stack: Any) -> None:
    """The documents fuzzed are the ones the running apps serve (the gateway's own paths,
    inside its merged document, carry the same operations)."""
    served = httpx.get(f"{fuzz_stack.urls[name]}/openapi.json", timeout=30).raise_for_status()
    fuzzed = SCHEMAS[name].raw_schema
    served_paths = served.json()["paths"]
    assert {p: served_paths.get(p) for p in fuzzed["paths"]} == fuzzed["paths"]
    if name != "gateway":
        assert served.json()["components"] == fuzzed["components"]


# schemathesis' own strategies use `random` (its deprecation warning is not ours to fix).
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.timeout(120)
@schemathesis.pytest.parametrize(**SCHEMAS)
def test_operation(case: Case[Any], fuzz_stack: Any) -> None:
    """One generated request to the app that documents the operation, every check run."""
    name = case.operation.schema.raw_schema[SERVICE_KEY]
    case.call_and_validate(
        base_url=fuzz_stack.urls[name],
        headers=fuzz_stack.headers,
        additional_checks=[problem_json_on_4xx],
    )


STATEFUL_SETTINGS = hypothesis.settings(
    max_examples=STATEFUL_SCENARIOS,
    stateful_step_count=STATEFUL_STEPS,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NAMES)
def test_stateful(name: str, fuzz_stack: Any) -> None:
    """Chains of calls along the links schemathesis infers from the documents (our OpenAPI
    declares none: a create's response id feeding the `{id}` of a get/patch/delete)."""
    base = SCHEMAS[name].as_state_machine()

    class Machine(base):  # type: ignore[valid-type, misc]
        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"base_url": fuzz_stack.urls[name], "headers": fuzz_stack.headers}

        def validate_response(
            self,
            response: Response,
            case: Case[Any],
            additional_checks: list[Any] | None = None,
            **kwargs: Any,
        ) -> None:
            super().validate_response(
                response, case, additional_checks=[problem_json_on_4xx], **kwargs
            )

    Machine.run(settings=STATEFUL_SETTINGS)
