"""The partner account layout of docs/nats-accounts.md, on a real nats-server.

The server runs the configuration block of that page as it is written (only the port and
the store directory replaced), so the document and the proof cannot drift apart. The
services' account publishes events of two tenants; the partner of `acme` must see exactly
`acme`'s, live and through its tenant stream, and be refused everything else.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig, StreamSource
from nats.js.errors import NotFoundError, ServiceUnavailableError

from chassis.infra import free_port, nats_server_binary
from chassis.testing import wait_for

DOC = Path(__file__).resolve().parents[1] / "docs" / "nats-accounts.md"
PASSWORDS = {
    "SYS_PASSWORD": "sys-secret",
    "CRM_SERVICES_PASSWORD": "crm-secret",
    "PARTNER_ACME_PASSWORD": "acme-secret",
    "PARTNER_GLOBEX_PASSWORD": "globex-secret",
}
CONTEXTS = ("contacts", "pipeline")
# the partner reaches its tenant stream's API under this prefix (its own `$JS.API` answers
# "JetStream not enabled for account")
PREFIX = "JS.CRM.API"


def documented_config(port: int, store: Path) -> str:
    """The ```conf block of docs/nats-accounts.md with this test's port and directory."""
    block = re.search(r"```conf\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/nats-accounts.md has no ```conf block"
    conf = block.group(1).replace('"127.0.0.1:4222"', f'"127.0.0.1:{port}"')
    return conf.replace('"/data/jetstream"', f'"{store}"')


@dataclass
class Server:
    url: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("nats-accounts")
    port = free_port()
    conf = base / "nats.conf"
    conf.write_text(documented_config(port, base / "js"))
    log = (base / "nats.log").open("wb")
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)],
        env={**os.environ, **PASSWORDS},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield Server(url=f"nats://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def connect(server: Server, user: str, password: str, errors: list[str]) -> Client:
    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    for _ in range(100):  # the server may still be starting
        try:
            return await nats.connect(
                server.url,
                user=user,
                password=password,
                error_cb=on_error,
                allow_reconnect=False,
                connect_timeout=2,
            )
        except (OSError, nats.errors.NoServersError):
            await asyncio.sleep(0.1)
    raise RuntimeError("nats-server did not accept connections")


@dataclass
class Clients:
    crm: Client
    acme: Client
    acme_errors: list[str]


@pytest.fixture
async def clients(server: Server) -> AsyncIterator[Clients]:
    crm = await connect(server, "crm-services", PASSWORDS["CRM_SERVICES_PASSWORD"], [])
    acme_errors: list[str] = []
    acme = await connect(server, "partner-acme", PASSWORDS["PARTNER_ACME_PASSWORD"], acme_errors)
    js = crm.jetstream()
    for context in CONTEXTS:
        await js.add_stream(name=f"CRM_{context.upper()}", subjects=[f"crm.{context}.>"])
    for tenant in ("acme", "globex"):
        await js.add_stream(
            StreamConfig(
                name=f"TENANT_{tenant.upper()}",
                sources=[
                    StreamSource(name=f"CRM_{c.upper()}", filter_subject=f"crm.{c}.{tenant}.>")
                    for c in CONTEXTS
                ],
            )
        )
    try:
        yield Clients(crm=crm, acme=acme, acme_errors=acme_errors)
    finally:
        await acme.close()
        for name in ("TENANT_ACME", "TENANT_GLOBEX", "CRM_CONTACTS", "CRM_PIPELINE"):
            await js.delete_stream(name)
        await crm.close()


EVENTS = (
    "crm.contacts.acme.contact.created",
    "crm.contacts.globex.contact.created",
    "crm.pipeline.acme.deal.won",
    "crm.pipeline.globex.deal.won",
)


async def publish_events(crm: Client) -> None:
    js = crm.jetstream()
    for subject in EVENTS:
        await js.publish(subject, subject.encode())


class TestLiveEvents:
    async def test_partner_receives_only_its_tenants_events(self, clients: Clients) -> None:
        got: list[str] = []

        async def on_msg(msg: Msg) -> None:
            got.append(msg.subject)

        await clients.acme.subscribe("crm.*.acme.>", cb=on_msg)
        await clients.acme.flush()

        async def arrived() -> bool:
            # Live delivery is at most once, and the partner's interest reaches the exporting
            # account asynchronously: on a loaded machine the first publish can precede it.
            # Publish again until the events arrive (JetStream replay is tested below).
            if len(set(got)) < 2:
                await publish_events(clients.crm)
            return len(set(got)) >= 2

        await wait_for(arrived, timeout=20, interval=0.25, message="acme's 2 events")
        await clients.crm.flush()
        await clients.acme.flush()
        assert set(got) == {"crm.contacts.acme.contact.created", "crm.pipeline.acme.deal.won"}

    @pytest.mark.parametrize("subject", ["crm.*.globex.>", "crm.>", ">", "crm.contacts.globex.*.*"])
    async def test_subscribing_wider_or_to_another_tenant_is_refused(
        self, clients: Clients, subject: str
    ) -> None:
        got: list[str] = []

        async def on_msg(msg: Msg) -> None:
            got.append(msg.subject)

        await clients.acme.subscribe(subject, cb=on_msg)
        await clients.acme.flush()
        await wait_for(
            lambda: _ready(any("permissions violation" in e.lower() for e in clients.acme_errors)),
            timeout=10,
            message=f"a permissions violation for {subject}",
        )
        await publish_events(clients.crm)
        await clients.crm.flush()
        await clients.acme.flush()
        assert not [s for s in got if ".globex." in s]

    async def test_partner_cannot_publish_events(self, clients: Clients) -> None:
        await clients.acme.publish("crm.contacts.acme.contact.created", b"forged")
        await clients.acme.flush()
        await wait_for(
            lambda: _ready(any("permissions violation" in e.lower() for e in clients.acme_errors)),
            timeout=10,
            message="a permissions violation for the publish",
        )
        info = await clients.crm.jetstream().stream_info("CRM_CONTACTS")
        assert info.state.messages == 0


class TestTenantStream:
    async def test_partner_replays_its_tenant_stream_with_a_durable(self, clients: Clients) -> None:
        await publish_events(clients.crm)
        crm_js = clients.crm.jetstream()

        async def sourced() -> bool:
            return (await crm_js.stream_info("TENANT_ACME")).state.messages == 2

        await wait_for(sourced, timeout=15, message="TENANT_ACME sourced acme's events")
        js = clients.acme.jetstream(prefix=PREFIX)
        sub = await js.pull_subscribe("crm.>", durable="erp-sync", stream="TENANT_ACME")
        msgs = await sub.fetch(10, timeout=5)
        for msg in msgs:
            await msg.ack_sync()
        assert sorted(m.subject for m in msgs) == [
            "crm.contacts.acme.contact.created",
            "crm.pipeline.acme.deal.won",
        ]
        consumer = await crm_js.consumer_info("TENANT_ACME", "erp-sync")
        assert consumer.num_ack_pending == 0
        assert consumer.delivered.stream_seq == 2

    @pytest.mark.parametrize("stream", ["TENANT_GLOBEX", "CRM_CONTACTS"])
    @pytest.mark.parametrize("prefix", [PREFIX, "$JS.API"])
    async def test_other_streams_are_out_of_reach(
        self, clients: Clients, stream: str, prefix: str
    ) -> None:
        js = clients.acme.jetstream(prefix=prefix, timeout=2)
        with pytest.raises(REFUSED):
            await js.stream_info(stream)
        with pytest.raises(REFUSED):
            await js.pull_subscribe("crm.>", durable="snoop", stream=stream)
        with pytest.raises(NotFoundError):
            await clients.crm.jetstream().consumer_info(stream, "snoop")

    @pytest.mark.parametrize("prefix", [PREFIX, "$JS.API"])
    async def test_partner_cannot_create_streams(self, clients: Clients, prefix: str) -> None:
        js = clients.acme.jetstream(prefix=prefix, timeout=2)
        with pytest.raises(REFUSED):
            await js.add_stream(name="MINE", subjects=["mine.>"])
        with pytest.raises(NotFoundError):
            await clients.crm.jetstream().stream_info("MINE")


# no import answers (no responders), the permission check drops the request (timeout), or the
# partner account's own JetStream says it is not enabled (503)
REFUSED = (nats.errors.NoRespondersError, nats.errors.TimeoutError, ServiceUnavailableError)


async def _ready(value: bool) -> bool:
    return value
