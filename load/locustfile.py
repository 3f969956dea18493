"""The mixed traffic of `make load` (driven by load/run.py, which writes the config).

One `CrmUser` is one API client of the seeded tenant with its own token (so the per-caller
rate limit is not one shared bucket). Weights give roughly 3 reads for every write:
360 views and timelines of seeded customers, the contacts, deals and tickets lists, and
writes that create and change contacts, deals and tickets. Every write publishes events
that the gateway's read model applies and the webhook subscriptions fan out.

Changes go to records this user created or owns by partition, with the ETag just read, so
two users never race for the same version: every 412 would be a real defect and counts as
an error like any other non-2xx.

Events lag is sampled as `LAG` entries in the locust stats: for one write in
`lag_sample`, a greenlet polls the customer's 360 (a plain client outside the stats) until
the written object is in it (every 20 ms, backing off to 500 ms); the entry's time is the
write's request -> visible.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from typing import Any

import gevent  # type: ignore[import-untyped]
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL
from locust import FastHttpUser, between, constant_throughput, events, task

CONFIG: dict[str, Any] = json.loads(open(os.environ["LOAD_CONFIG"]).read())  # noqa: SIM115
_USER_INDEX = itertools.count()
LAG_TIMEOUT = 30.0
LAG_POLL = 0.02
LAG_POLL_MAX = 0.5


def _wait_time() -> Any:
    rate = float(CONFIG.get("rate_per_user", 0))
    return constant_throughput(rate) if rate > 0 else between(0.05, 0.2)


class LagProbe:
    """Polls a customer's 360 until a marker (the written object's id) is in it."""

    def __init__(self, host: str) -> None:
        url = URL(host)
        self.client = HTTPClient(url.host, url.port, concurrency=8, network_timeout=10)

    def watch(self, name: str, token: str, contact_id: str, marker: str, since: float) -> None:
        gevent.spawn(self._poll, name, token, contact_id, marker, since)

    def _poll(self, name: str, token: str, contact_id: str, marker: str, since: float) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        path = f"/v1/customers/{contact_id}/360"
        error: Exception | None = None
        pause = LAG_POLL
        while True:
            response = self.client.get(path, headers=headers)
            body = response.read()
            if response.status_code == 200 and marker.encode() in body:
                break
            if time.monotonic() - since > LAG_TIMEOUT:
                error = TimeoutError(f"{marker} not in the 360 of {contact_id} after 30 s")
                break
            # back off so that a slow system is not also flooded by its own probes
            gevent.sleep(pause)
            pause = min(LAG_POLL_MAX, pause * 1.5)
        events.request.fire(  # type: ignore[no-untyped-call]
            request_type="LAG",
            name=name,
            response_time=(time.monotonic() - since) * 1000,
            response_length=0,
            exception=error,
            context={},
        )


_PROBE: LagProbe | None = None


def _probe(host: str) -> LagProbe:
    global _PROBE
    if _PROBE is None:
        _PROBE = LagProbe(host)
    return _PROBE


class CrmUser(FastHttpUser):
    wait_time = _wait_time()

    def on_start(self) -> None:
        index = next(_USER_INDEX)
        users = max(1, int(CONFIG["users"]))
        self.rng = random.Random(index)
        self.token = CONFIG["tokens"][index % len(CONFIG["tokens"])]
        self.auth = {"Authorization": f"Bearer {self.token}"}
        # records only this user changes (see the module docstring)
        self.my_contacts: list[str] = CONFIG["contacts"][index % users :: users]
        self.my_deals: list[str] = CONFIG["deals"][index % users :: users]
        self.my_tickets: list[str] = CONFIG["tickets"][index % users :: users]
        self.probe = _probe(self.host or CONFIG["gateway"])
        self.lag_counter = itertools.count()

    # --- reads ---------------------------------------------------------------------------

    def _customer(self) -> str:
        return str(self.rng.choice(CONFIG["contacts"]))

    @task(30)
    def read_360(self) -> None:
        self.client.get(
            f"/v1/customers/{self._customer()}/360",
            headers=self.auth,
            name="/v1/customers/{id}/360",
        )

    @task(10)
    def read_timeline(self) -> None:
        self.client.get(
            f"/v1/customers/{self._customer()}/timeline?limit=20",
            headers=self.auth,
            name="/v1/customers/{id}/timeline",
        )

    @task(6)
    def list_contacts(self) -> None:
        self.client.get("/v1/contacts?limit=50", headers=self.auth, name="/v1/contacts")

    @task(5)
    def list_deals(self) -> None:
        self.client.get("/v1/deals?limit=50", headers=self.auth, name="/v1/deals")

    @task(5)
    def list_tickets(self) -> None:
        self.client.get("/v1/tickets?limit=50", headers=self.auth, name="/v1/tickets")

    # --- writes --------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        headers = {**self.auth, "Idempotency-Key": str(uuid.uuid4())}
        r = self.client.post(path, json=body, headers=headers, name=path)
        return dict(r.json()) if r.status_code == 201 else None

    def _change(self, path: str, template: str, body: dict[str, Any]) -> None:
        """Read for the ETag, then PATCH with If-Match (the platform's concurrency rule)."""
        read = self.client.get(path, headers=self.auth, name=template)
        headers = read.headers if read.status_code == 200 else None
        etag = headers.get("etag") if headers is not None else None
        if etag:
            self.client.patch(
                path,
                json=body,
                headers={**self.auth, "If-Match": etag},
                name=template,
            )

    def _sample_lag(self) -> bool:
        return next(self.lag_counter) % max(1, int(CONFIG["lag_sample"])) == 0

    @task(6)
    def create_contact(self) -> None:
        n = uuid.uuid4().hex[:12]
        started = time.monotonic()
        created = self._post(
            "/v1/contacts",
            {
                "first_name": "Load",
                "last_name": f"User {n}",
                "email": f"load.{n}@example.com",
                "lifecycle_stage": "lead",
                "lead_source": "load-test",
                "tags": ["load"],
            },
        )
        if created is not None:
            self.my_contacts.append(created["id"])
            if self._sample_lag():
                self.probe.watch(
                    "contact write -> 360", self.token, created["id"], created["id"], started
                )

    @task(4)
    def update_contact(self) -> None:
        if self.my_contacts:
            contact_id = self.rng.choice(self.my_contacts)
            self._change(
                f"/v1/contacts/{contact_id}",
                "/v1/contacts/{id}",
                {"lead_source": f"load-{self.rng.randint(0, 10**9)}"},
            )

    @task(3)
    def create_deal(self) -> None:
        contact_id = self._customer()
        started = time.monotonic()
        created = self._post(
            "/v1/deals",
            {
                "name": f"Load deal {uuid.uuid4().hex[:8]}",
                "contact_id": contact_id,
                "owner_id": "load-owner",
                "pipeline_id": CONFIG["pipeline_id"],
                "stage_id": self.rng.choice(CONFIG["open_stage_ids"]),
                "amount": f"{self.rng.randint(1, 500) * 100}.00",
                "currency": "USD",
            },
        )
        if created is not None:
            self.my_deals.append(created["id"])
            if self._sample_lag():
                self.probe.watch(
                    "deal write -> 360", self.token, contact_id, created["id"], started
                )

    @task(2)
    def move_deal(self) -> None:
        if self.my_deals:
            self._change(
                f"/v1/deals/{self.rng.choice(self.my_deals)}",
                "/v1/deals/{id}",
                {"stage_id": self.rng.choice(CONFIG["open_stage_ids"])},
            )

    @task(3)
    def create_ticket(self) -> None:
        created = self._post(
            "/v1/tickets",
            {
                "subject": f"Load ticket {uuid.uuid4().hex[:8]}",
                "description": "Opened by the load test.",
                "requester_contact_id": self._customer(),
                "channel": "web",
                "priority": self.rng.choice(["low", "normal", "high"]),
            },
        )
        if created is not None:
            self.my_tickets.append(created["id"])

    @task(2)
    def update_ticket(self) -> None:
        if self.my_tickets:
            self._change(
                f"/v1/tickets/{self.rng.choice(self.my_tickets)}",
                "/v1/tickets/{id}",
                {"priority": self.rng.choice(["low", "normal", "high", "urgent"])},
            )
