"""Alembic environment of the retrieval schema; the kit's runner supplies the connection."""

from alembic import context

from services.common.migrations import run_env
from services.retrieval.store import metadata_obj

run_env(context, metadata_obj)
