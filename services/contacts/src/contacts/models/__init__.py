"""Tables (SQLModel, `table=True`) and API schemas of the contacts service."""

from contacts.models.schemas import (
    BatchIn,
    BatchItemResult,
    BatchOut,
    CompanyIn,
    CompanyPublic,
    ConsentIn,
    ContactIn,
    ContactPublic,
    CustomFieldCreate,
    CustomFieldPublic,
    CustomFieldUpdate,
    DuplicateCandidate,
    DuplicatesOut,
    FieldType,
    ImportErrorOut,
    ImportJobPublic,
    LifecycleStage,
    MergeIn,
    MoneyIn,
    ObjectType,
)
from contacts.models.tables import (
    Company,
    CompanyExternalId,
    Contact,
    ContactExternalId,
    CustomFieldDefinition,
    ImportRowError,
    ImportJob,
)

__all__ = [
    "BatchIn", "BatchItemResult", "BatchOut", "Company", "CompanyExternalId", "CompanyIn",
    "CompanyPublic", "ConsentIn", "Contact", "ContactExternalId", "ContactIn", "ContactPublic",
    "CustomFieldCreate", "CustomFieldDefinition", "CustomFieldPublic", "CustomFieldUpdate",
    "DuplicateCandidate", "DuplicatesOut", "FieldType", "ImportErrorOut",
    "ImportJob", "ImportJobPublic", "ImportRowError", "LifecycleStage", "MergeIn", "MoneyIn", "ObjectType",
]
