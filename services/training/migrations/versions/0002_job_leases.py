"""Jobs are claimed under a lease: owner replica, fencing epoch, expiry.

Additive only: a replica of the previous release ignores the columns. Running jobs
from before have no owner and no expiry, so the first replica to start claims them.

Revision ID: 0002_job_leases
Revises: 0001_baseline
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_job_leases"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("lease_epoch", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_expires_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_epoch")
        batch.drop_column("owner")
