"""Domain errors; each becomes an RFC 9457 problem via the chassis handler."""

from __future__ import annotations

import uuid

from chassis.problems import Conflict, NotFound, ProblemError


class ContactNotFound(NotFound):
    def __init__(self, contact_id: uuid.UUID | str) -> None:
        super().__init__(f"contact {contact_id} not found")


class ContactMergedAway(NotFound):
    """A merge loser: the body names the survivor (`merged_into_id`)."""

    def __init__(self, contact_id: uuid.UUID, merged_into_id: uuid.UUID) -> None:
        super().__init__(
            f"contact {contact_id} was merged into {merged_into_id}",
            merged_into_id=str(merged_into_id),
        )


class ContactErased(ProblemError):
    status, title = 410, "Gone"

    def __init__(self, contact_id: uuid.UUID) -> None:
        super().__init__(f"contact {contact_id} was erased")


class CompanyNotFound(NotFound):
    def __init__(self, company_id: uuid.UUID | str) -> None:
        super().__init__(f"company {company_id} not found")


class CompanyInUse(Conflict):
    def __init__(self, company_id: uuid.UUID, contacts: int) -> None:
        super().__init__(
            f"company {company_id} still has {contacts} contacts; move them first",
            contacts=contacts,
        )


class ExternalIdConflict(Conflict):
    pass


class FieldNotFound(NotFound):
    def __init__(self, object_type: str, key: str) -> None:
        super().__init__(f"no custom field {key!r} on {object_type}")


class FieldExists(Conflict):
    def __init__(self, object_type: str, key: str) -> None:
        super().__init__(f"custom field {key!r} on {object_type} already exists")


class ImportJobNotFound(NotFound):
    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(f"import job {job_id} not found")
