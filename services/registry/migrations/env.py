"""Alembic environment of the registry schema; the kit's runner supplies the connection."""

from alembic import context

from services.common.migrations import run_env
from services.registry.models import Base

run_env(context, Base.metadata)
