"""The contacts service app: `build(settings)` for tests, `create()` for uvicorn --factory."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from chassis.app import ServiceSpec, create_app
from chassis.settings import load_settings
from contacts import api, handlers
from contacts.imports import ImportRunner, runner
from contacts.settings import ContactsSettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

__all__ = ["MIGRATIONS", "ContactsSettings", "build", "create"]


SERVICE = "contacts"


def _spec(settings: ContactsSettings) -> ServiceSpec:
    async def start_imports(app: FastAPI) -> None:
        app.state.imports = ImportRunner(
            app.state.db,
            settings.default_phone_region,
            settings.import_chunk_size,
            max_running=settings.import_max_running,
        )
        await runner(app).resume_unfinished()

    async def stop_imports(app: FastAPI) -> None:
        await runner(app).stop()

    return ServiceSpec(
        name=SERVICE,
        title="Contacts",
        description="Contacts, companies, custom fields, dedup and merge, consent, erasure, "
        "imports.",
        routers=api.routers,
        migrations_dir=MIGRATIONS,
        produces="contacts",
        consumers=[handlers.consumer],
        on_startup=[start_imports],
        on_shutdown=[stop_imports],
        body_limits={"/v1/contacts/imports": settings.import_max_bytes + 1024 * 1024},
        openapi_tags=[{"name": "contacts"}, {"name": "companies"}, {"name": "custom fields"}],
    )


def build(settings: ContactsSettings) -> FastAPI:
    return create_app(_spec(settings), settings)


def create() -> FastAPI:
    return build(load_settings(ContactsSettings, "contacts"))
