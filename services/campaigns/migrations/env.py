from alembic import context

from chassis.migrations import run_env

# Migrations are hand-written SQL; there is no ORM metadata to compare against.
run_env(context, None)
