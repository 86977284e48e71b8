"""Replicas: index snapshots in the blob store, and the membership leases.

- `index_snapshots`: each collection's newest snapshot (object key and the revision
  it holds), so any replica loads it and replays only the writes after it.
- `replicas`: one row per live replica, renewed by heartbeats; tenants are placed by
  rendezvous hashing over the rows whose lease has not lapsed.

Revision ID: 0002_replicas
Revises: 0001_baseline
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_replicas"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "index_snapshots",
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("collection_id"),
    )
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("replicas")
    op.drop_table("index_snapshots")
