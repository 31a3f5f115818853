"""A count of each tenant's unfinished jobs kept by triggers, and on PostgreSQL a submit's writes as one
function.

``tenants.unfinished_jobs`` is the number of the tenant's jobs that are queued, running or cancelling.
Triggers on ``jobs`` keep it (an insert, a delete, a status change across that line), so a submit reads
one number instead of counting the tenant's queue: a tenant allowed thousands of jobs paid a scan of
all of them on every submit, under its lock (benchmarks/api_load.py lifts the limit and queues
thousands). Jobs change status one per transaction (workers, reconciler, cancel), so a transaction
holds at most one tenant row through the trigger, taken after its job row: no lock cycle with a submit,
which takes the tenant row first and then only inserts.

``POST /v1/jobs`` on PostgreSQL calls ``nncompress_submit_job`` in one autocommit statement instead
of running a transaction of its own (BEGIN, the locked insert, the count, COMMIT: four round trips,
each costing the API's one busy core a share of a submit). It locks the tenant row (FOR NO KEY
UPDATE: the job's foreign key takes KEY SHARE on it, which FOR UPDATE would wait for), reads the
count, and inserts the job and its ``created`` event unless the tenant is at ``p_limit``; a refused
submit writes nothing. Its answer: ``event_id`` and ``unfinished`` (the tenant's other unfinished
jobs), both NULL when the tenant row is gone, ``event_id`` NULL at the limit. The job is one JSON
document read with ``json_populate_record``, so the signature stays the same when ``jobs`` gains a
column; the columns it writes are those a submit sets (the others are NULL until a worker claims it).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.services.job_insert's JOB_COLUMNS and UNFINISHED_STATUSES when this revision was written: a
# migration does not follow later changes (a later revision replaces the function or the triggers).
COLUMNS = (
    "id", "tenant_id", "model_id", "status", "progress", "spec", "device", "queue", "idempotency_key",
    "request_hash", "attempt", "max_attempts", "cancel_requested", "webhook", "mlflow", "created_at",
    "updated_at",
)  # fmt: skip
UNFINISHED = "('queued', 'running', 'cancelling')"
SUBMIT_SIGNATURE = "nncompress_submit_job(json, integer, text)"
SQLITE_TRIGGERS = ("jobs_unfinished_insert", "jobs_unfinished_update", "jobs_unfinished_delete")


def upgrade() -> None:
    op.add_column(
        "tenants", sa.Column("unfinished_jobs", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_triggers()
        _postgresql_submit_function()
    else:
        _sqlite_triggers()
    # After the triggers: on PostgreSQL CREATE TRIGGER holds off writes to jobs until this commits, so
    # no job changes between the count and the first trigger; SQLite has one writer.
    op.execute(
        "UPDATE tenants SET unfinished_jobs = (SELECT count(*) FROM jobs "
        f"WHERE jobs.tenant_id = tenants.id AND jobs.status IN {UNFINISHED})"
    )


def _postgresql_triggers() -> None:
    op.execute(
        f"""
        CREATE FUNCTION nncompress_count_unfinished() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN {UNFINISHED} THEN
                UPDATE tenants SET unfinished_jobs = unfinished_jobs - 1 WHERE id = OLD.tenant_id;
            END IF;
            IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.status IN {UNFINISHED} THEN
                UPDATE tenants SET unfinished_jobs = unfinished_jobs + 1 WHERE id = NEW.tenant_id;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER jobs_count_unfinished_change AFTER INSERT OR DELETE ON jobs "
        "FOR EACH ROW EXECUTE FUNCTION nncompress_count_unfinished()"
    )
    # Only a change across the line: a claim (queued -> running) or a requeue touches no tenant row.
    op.execute(
        "CREATE TRIGGER jobs_count_unfinished_update AFTER UPDATE OF status, tenant_id ON jobs FOR EACH ROW "
        f"WHEN ((OLD.status IN {UNFINISHED}) <> (NEW.status IN {UNFINISHED}) "
        "OR OLD.tenant_id <> NEW.tenant_id) EXECUTE FUNCTION nncompress_count_unfinished()"
    )


def _postgresql_submit_function() -> None:
    columns = ", ".join(COLUMNS)
    values = ", ".join(f"j.{name}" for name in COLUMNS)
    op.execute(
        f"""
        CREATE FUNCTION nncompress_submit_job(
            p_job json, p_limit integer, p_message text, OUT event_id integer, OUT unfinished integer
        ) LANGUAGE plpgsql AS $$
        DECLARE
            j jobs;
        BEGIN
            j := json_populate_record(NULL::jobs, p_job);
            SELECT unfinished_jobs INTO unfinished FROM tenants WHERE id = j.tenant_id FOR NO KEY UPDATE;
            IF NOT FOUND OR unfinished >= p_limit THEN
                RETURN;
            END IF;
            INSERT INTO jobs ({columns}) VALUES ({values});
            INSERT INTO job_events (job_id, at, type, status, stage, progress, message)
            VALUES (j.id, j.created_at, 'created', j.status, NULL, j.progress, p_message)
            RETURNING id INTO event_id;
        END $$
        """
    )


def _sqlite_triggers() -> None:
    op.execute(
        f"""
        CREATE TRIGGER jobs_unfinished_insert AFTER INSERT ON jobs WHEN NEW.status IN {UNFINISHED}
        BEGIN
            UPDATE tenants SET unfinished_jobs = unfinished_jobs + 1 WHERE id = NEW.tenant_id;
        END
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER jobs_unfinished_delete AFTER DELETE ON jobs WHEN OLD.status IN {UNFINISHED}
        BEGIN
            UPDATE tenants SET unfinished_jobs = unfinished_jobs - 1 WHERE id = OLD.tenant_id;
        END
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER jobs_unfinished_update AFTER UPDATE OF status, tenant_id ON jobs
        WHEN (OLD.status IN {UNFINISHED}) <> (NEW.status IN {UNFINISHED}) OR OLD.tenant_id <> NEW.tenant_id
        BEGIN
            UPDATE tenants SET unfinished_jobs = unfinished_jobs - (OLD.status IN {UNFINISHED})
            WHERE id = OLD.tenant_id;
            UPDATE tenants SET unfinished_jobs = unfinished_jobs + (NEW.status IN {UNFINISHED})
            WHERE id = NEW.tenant_id;
        END
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {SUBMIT_SIGNATURE}")
        op.execute("DROP TRIGGER IF EXISTS jobs_count_unfinished_update ON jobs")
        op.execute("DROP TRIGGER IF EXISTS jobs_count_unfinished_change ON jobs")
        op.execute("DROP FUNCTION IF EXISTS nncompress_count_unfinished()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("unfinished_jobs")
