from alembic import context

from chassis.migrations import run_env

run_env(context, None)
