from alembic import context
from sqlmodel import SQLModel

from chassis.migrations import run_env
from contacts.models import tables  # noqa: F401 - registers the tables on SQLModel.metadata

run_env(context, SQLModel.metadata)
