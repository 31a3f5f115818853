"""MLflow tracking: what a job asks of MLflow (jobs.mlflow) and the attempts to log it (mlflow_deliveries).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Nullable: jobs submitted without tracking (and every job before this revision) log nothing.
    op.add_column("jobs", sa.Column("mlflow", sa.JSON(), nullable=True))
    op.create_table(
        "mlflow_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC_DATETIME, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("experiment_id", sa.String(64), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("delivered_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_mlflow_deliveries_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mlflow_deliveries")),
    )
    op.create_index(op.f("ix_mlflow_deliveries_job_id"), "mlflow_deliveries", ["job_id"])
    op.create_index("ix_mlflow_deliveries_at_next_attempt_at", "mlflow_deliveries", ["at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("mlflow_deliveries")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("mlflow")
