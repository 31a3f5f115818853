"""The job relay: ``jobs.published_at`` and, on PostgreSQL, a NOTIFY for every new job.

The workers publish new jobs to the broker (``workers.relay``), no longer the API: ``published_at``
says which queued jobs still wait for their message, a partial index keeps that lookup to the few
unpublished rows however long the queue is, and the trigger wakes the workers' relays at once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)
UNPUBLISHED = "published_at IS NULL AND status = 'queued'"
# core.queues.JOBS_CHANNEL when this revision was written; a migration does not follow later renames.
CHANNEL = "nncompress_jobs"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("published_at", UTC_DATETIME, nullable=True))
    # Before this revision the API published every job as it inserted it: no queued job waits for the
    # relay. Only queued rows are touched (the relay looks at no other), so a long history costs nothing.
    op.execute("UPDATE jobs SET published_at = created_at WHERE status = 'queued'")
    op.create_index(
        "ix_jobs_unpublished_created_at",
        "jobs",
        ["created_at"],
        postgresql_where=sa.text(UNPUBLISHED),
        sqlite_where=sa.text(UNPUBLISHED),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Delivered when the inserting transaction commits, so a woken relay finds the row.
        op.execute(
            f"""
            CREATE FUNCTION nncompress_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('{CHANNEL}', NEW.id);
                RETURN NULL;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs "
            "FOR EACH ROW EXECUTE FUNCTION nncompress_notify_job()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS jobs_notify_insert ON jobs")
        op.execute("DROP FUNCTION IF EXISTS nncompress_notify_job()")
    op.drop_index("ix_jobs_unpublished_created_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("published_at")
