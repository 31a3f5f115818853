"""On PostgreSQL, a submit's writes as one function: lock the tenant, count, insert the job and its event.

``POST /v1/jobs`` calls ``nncompress_submit_job`` in one autocommit statement instead of running a
transaction of its own (BEGIN, the locked insert, the count, COMMIT: four round trips, each costing
the API's one busy core a share of a submit). The function keeps the limit exact: the count runs
after the tenant row is locked, and PL/pgSQL takes a fresh snapshot for each of its statements (READ
COMMITTED), so it sees every job committed by a submit that held the lock before. It counts before
inserting, so a refused submit writes nothing.

Its answer: ``event_id`` (the ``created`` event) and ``unfinished`` (the tenant's other unfinished jobs,
counted up to the limit); both NULL when the tenant row is gone; ``event_id`` NULL with every unfinished
job counted when the tenant is at its limit. The job is one JSON document read with
``json_populate_record``, so the function's signature stays the same when ``jobs`` gains a column;
the columns it writes are those a submit sets (the others are NULL until a worker claims the job).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.services.job_insert's JOB_COLUMNS and UNFINISHED_STATUSES when this revision was written: a
# migration does not follow later changes (a later revision replaces the function).
COLUMNS = (
    "id", "tenant_id", "model_id", "status", "progress", "spec", "device", "queue", "idempotency_key",
    "request_hash", "attempt", "max_attempts", "cancel_requested", "webhook", "mlflow", "created_at",
    "updated_at",
)  # fmt: skip
UNFINISHED = "('queued', 'running', 'cancelling')"
SIGNATURE = "nncompress_submit_job(json, integer, text)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has one writer at a time: the API runs the same steps in a transaction
    columns = ", ".join(COLUMNS)
    values = ", ".join(f"j.{name}" for name in COLUMNS)
    op.execute(
        f"""
        CREATE FUNCTION nncompress_submit_job(
            p_job json, p_limit integer, p_message text, OUT event_id integer, OUT unfinished bigint
        ) LANGUAGE plpgsql AS $$
        DECLARE
            j jobs;
        BEGIN
            j := json_populate_record(NULL::jobs, p_job);
            -- NO KEY UPDATE: the job's foreign key takes KEY SHARE on this row, which FOR UPDATE
            -- would wait for (two submits of one tenant would deadlock on each other's).
            PERFORM 1 FROM tenants WHERE id = j.tenant_id FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                RETURN;
            END IF;
            -- Up to the limit only: a tenant allowed thousands of jobs pays no scan of all of them.
            SELECT count(*) INTO unfinished FROM (
                SELECT 1 FROM jobs WHERE tenant_id = j.tenant_id AND status IN {UNFINISHED} LIMIT p_limit
            ) AS capped;
            IF unfinished >= p_limit THEN
                SELECT count(*) INTO unfinished FROM jobs
                WHERE tenant_id = j.tenant_id AND status IN {UNFINISHED};
                RETURN;
            END IF;
            INSERT INTO jobs ({columns}) VALUES ({values});
            INSERT INTO job_events (job_id, at, type, status, stage, progress, message)
            VALUES (j.id, j.created_at, 'created', j.status, NULL, j.progress, p_message)
            RETURNING id INTO event_id;
        END $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
