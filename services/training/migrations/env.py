"""Alembic environment of the training schema; the kit's runner supplies the connection."""

from alembic import context

from services.common.migrations import run_env
from services.training.store import metadata

run_env(context, metadata)
