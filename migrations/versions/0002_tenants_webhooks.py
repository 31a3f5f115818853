"""Tenants, API keys, webhook deliveries; models and jobs belong to a tenant.

Existing models and jobs move to a tenant named "default", created here. Idempotency keys become
unique per tenant instead of globally.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    tenants = op.create_table(
        "tenants",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("max_concurrent_jobs", sa.Integer(), nullable=True),
        sa.Column("max_upload_bytes", sa.BigInteger(), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("webhook_secret", sa.String(128), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(32), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("revoked_at", UTC_DATETIME, nullable=True),
        sa.Column("last_used_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_api_keys_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"])

    default_id = uuid.uuid4().hex
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    op.bulk_insert(
        tenants,
        [
            {
                "id": default_id,
                "name": "default",
                "webhook_secret": secret,
                "created_at": datetime.now(timezone.utc),
            }
        ],
    )

    # Nullable first, filled with the default tenant, then NOT NULL (batch mode rebuilds SQLite tables).
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("tenant_id", sa.String(32), nullable=True))
    op.execute(sa.text("UPDATE models SET tenant_id = :t").bindparams(t=default_id))
    with op.batch_alter_table("models") as batch:
        batch.alter_column("tenant_id", existing_type=sa.String(32), nullable=False)
        batch.create_foreign_key(
            op.f("fk_models_tenant_id_tenants"), "tenants", ["tenant_id"], ["id"], ondelete="RESTRICT"
        )
        batch.create_index(op.f("ix_models_tenant_id"), ["tenant_id"])

    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("tenant_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("webhook", sa.JSON(), nullable=True))
    op.execute(sa.text("UPDATE jobs SET tenant_id = :t").bindparams(t=default_id))
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("tenant_id", existing_type=sa.String(32), nullable=False)
        batch.create_foreign_key(
            op.f("fk_jobs_tenant_id_tenants"), "tenants", ["tenant_id"], ["id"], ondelete="RESTRICT"
        )
        batch.drop_constraint(op.f("uq_jobs_idempotency_key"), type_="unique")
        batch.create_unique_constraint(
            op.f("uq_jobs_tenant_id_idempotency_key"), ["tenant_id", "idempotency_key"]
        )
        batch.create_index("ix_jobs_tenant_id_status", ["tenant_id", "status"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC_DATETIME, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_webhook_deliveries_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(op.f("ix_webhook_deliveries_job_id"), "webhook_deliveries", ["job_id"])
    op.create_index(
        "ix_webhook_deliveries_at_next_attempt_at", "webhook_deliveries", ["at", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_tenant_id_status")
        batch.drop_constraint(op.f("uq_jobs_tenant_id_idempotency_key"), type_="unique")
        batch.create_unique_constraint(op.f("uq_jobs_idempotency_key"), ["idempotency_key"])
        batch.drop_constraint(op.f("fk_jobs_tenant_id_tenants"), type_="foreignkey")
        batch.drop_column("webhook")
        batch.drop_column("tenant_id")
    with op.batch_alter_table("models") as batch:
        batch.drop_index(op.f("ix_models_tenant_id"))
        batch.drop_constraint(op.f("fk_models_tenant_id_tenants"), type_="foreignkey")
        batch.drop_column("tenant_id")
    op.drop_table("api_keys")
    op.drop_table("tenants")
