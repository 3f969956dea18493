"""`make demo`: load a realistic sample tenant through the public API of a running stack
(`make run`), then print a token for it. Idempotent: it upserts by external id, so running
it twice changes nothing.

The sales and support domains are in demo_domains.py."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path
from typing import Any

import httpx

from chassis import devkeys

sys.path.insert(0, str(Path(__file__).parent))
import demo_domains

GATEWAY = os.environ.get("CRM_GATEWAY_URL", "http://127.0.0.1:8000")
TENANT = os.environ.get("DEMO_TENANT", "demo")
DATA = Path(os.environ.get("CRM_DATA_DIR", ".data"))
COMPANIES = int(os.environ.get("DEMO_COMPANIES", "300"))
CONTACTS = int(os.environ.get("DEMO_CONTACTS", "3000"))

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Radia",
    "Linus",
    "Frances",
    "John",
    "Katherine",
    "Tim",
    "Hedy",
    "Dennis",
    "Sophie",
    "Niklaus",
    "Anita",
    "Guido",
    "Shafi",
    "Leslie",
    "Fei-Fei",
    "Bjarne",
    "Yukihiro",
    "Lynn",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Perlman",
    "Torvalds",
    "Allen",
    "McCarthy",
    "Johnson",
    "Berners-Lee",
    "Lamarr",
    "Ritchie",
    "Wilson",
    "Wirth",
    "Borg",
    "van Rossum",
    "Goldwasser",
    "Lamport",
    "Li",
    "Stroustrup",
    "Matsumoto",
    "Conway",
]
WORDS = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Aperture",
    "Massive",
    "Dynamic",
    "Blue",
    "Northern",
    "Pacific",
    "Quantum",
    "Vertex",
    "Summit",
    "Pioneer",
    "Apex",
    "Nimbus",
    "Orbit",
]
SUFFIX = ["Corp", "Industries", "Labs", "Systems", "Holdings", "GmbH", "Ltd", "Group"]
INDUSTRIES = [
    "software",
    "manufacturing",
    "retail",
    "finance",
    "healthcare",
    "logistics",
    "energy",
    "education",
]
STAGES = ["subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist"]
SOURCES = ["web", "event", "referral", "partner", "outbound", "ads"]
TAGS = ["vip", "newsletter", "trial", "churn-risk", "webinar-2026", "beta", "enterprise", "smb"]

FIELDS = [
    (
        "contact",
        {
            "key": "preferred_channel",
            "label": "Preferred channel",
            "type": "enum",
            "options": ["email", "phone", "chat"],
        },
    ),
    ("contact", {"key": "seats", "label": "Seats wanted", "type": "number"}),
    ("contact", {"key": "birthday", "label": "Birthday", "type": "date"}),
    (
        "company",
        {"key": "tier", "label": "Tier", "type": "enum", "options": ["gold", "silver", "bronze"]},
    ),
]


def company(i: int, rng: random.Random) -> dict[str, Any]:
    name = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(SUFFIX)}"
    return {
        "name": name,
        "domain": f"{name.split()[0].lower()}{i}.example.com",
        "industry": rng.choice(INDUSTRIES),
        "employees": rng.choice([5, 20, 80, 250, 1200, 9000]),
        "annual_revenue": {
            "amount": f"{rng.randint(1, 900) * 100000}.00",
            "currency": rng.choice(["USD", "EUR", "GBP"]),
        },
        "tags": rng.sample(TAGS, 1),
        "custom_fields": {"tier": rng.choice(["gold", "silver", "bronze"])},
    }


def contact(i: int, rng: random.Random, company_ids: list[str]) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    consent = rng.choice(["granted", "granted", "denied", "unknown"])
    return {
        "first_name": first,
        "last_name": last,
        "email": f"{first}.{last}.{i}@example.com".lower().replace(" ", ""),
        "phone": f"+1415555{i % 10000:04d}",
        "company_id": rng.choice(company_ids),
        "lifecycle_stage": rng.choice(STAGES),
        "lead_source": rng.choice(SOURCES),
        "tags": rng.sample(TAGS, rng.randint(0, 3)),
        "custom_fields": {
            "preferred_channel": rng.choice(["email", "phone", "chat"]),
            "seats": rng.randint(1, 500),
        },
        "consent": {
            "email_marketing": consent,
            "legal_basis": "consent" if consent == "granted" else None,
        },
        "external_ids": {"demo": f"contact-{i}"},
    }


async def main() -> int:
    rng = random.Random(2026)
    token = devkeys.mint_token(DATA / "jwt", tenant=TENANT, roles=["admin"], sub="demo-admin")
    h = {"Authorization": f"Bearer {token}", "X-Origin": "demo"}
    async with httpx.AsyncClient(base_url=GATEWAY, headers=h, timeout=120) as client:
        for object_type, field in FIELDS:
            r = await client.post(f"/v1/custom-fields/{object_type}", json=field)
            if r.status_code not in (200, 201, 409):
                print(f"custom field {field['key']}: {r.status_code} {r.text}", file=sys.stderr)
                return 1
        sem = asyncio.Semaphore(8)

        async def put_company(i: int) -> str:
            async with sem:
                r = await client.put(
                    f"/v1/companies/by-external-id/demo/company-{i}", json=company(i, rng)
                )
                r.raise_for_status()
                return str(r.json()["id"])

        company_ids = await asyncio.gather(*(put_company(i) for i in range(COMPANIES)))
        created = updated = failed = 0
        contact_ids: list[str] = []
        for start in range(0, CONTACTS, 1000):
            items = [
                contact(i, rng, list(company_ids))
                for i in range(start, min(start + 1000, CONTACTS))
            ]
            r = await client.post("/v1/contacts/batch", json={"items": items})
            r.raise_for_status()
            for item in r.json()["items"]:
                status = item["status"]
                if item.get("id"):
                    contact_ids.append(str(item["id"]))
                created += status == "created"
                updated += status == "updated"
                failed += status == "error"
        sales = await demo_domains.load_sales(client, rng, contact_ids)
        support = await demo_domains.load_support(client, rng, contact_ids)
    print(
        f"demo tenant '{TENANT}': {len(company_ids)} companies, {created} contacts created, "
        f"{updated} updated, {failed} failed; {sales['deals']} deals ({sales['closed']} closed "
        f"now), {support['tickets']} tickets",
        file=sys.stderr,
    )
    print(token)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
