"""Startup and shutdown hooks (gateway.app): the webhook dispatcher and the event log's
retention pruner, kept on `app.state`."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.feed.retention import pruner
from gateway.settings import GatewaySettings
from gateway.webhooks.dispatcher import Dispatcher


async def start(app: FastAPI) -> None:
    settings: GatewaySettings = app.state.settings
    app.state.webhooks = Dispatcher(app.state.db, settings)
    await app.state.webhooks.start()
    app.state.event_log_pruner = pruner(app.state.db, settings)
    await app.state.event_log_pruner.start()


async def stop(app: FastAPI) -> None:
    dispatcher: Dispatcher | None = getattr(app.state, "webhooks", None)
    if dispatcher is not None:
        await dispatcher.stop()
    prune = getattr(app.state, "event_log_pruner", None)
    if prune is not None:
        await prune.stop()
