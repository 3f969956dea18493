"""Settings of the contacts service (env prefix CONTACTS_, falling back to CRM_)."""

from __future__ import annotations

from chassis.settings import ServiceSettings


class ContactsSettings(ServiceSettings):
    # Region used to read phone numbers written without a +country code.
    default_phone_region: str = "US"
    # Rows per transaction of an import job (each chunk goes through the batch upsert path).
    import_chunk_size: int = 500
    # Import jobs one process works on at once (each holds a connection for its lock and one
    # for its chunk); the others wait, `queued`, in the order they came.
    import_max_running: int = 4
    # Largest accepted import file.
    import_max_bytes: int = 50 * 1024 * 1024
    # Default minimum score of GET /v1/contacts/{id}/duplicates.
    duplicate_threshold: float = 0.5
