"""``python -m workers``: a Celery worker of the distributed mode (the compose file's ``worker`` command).

    python -m workers --queues cpu
    CUDA_VISIBLE_DEVICES=0 python -m workers --queues gpu      # one worker process per GPU

Equivalent to ``celery -A workers.celery_app worker -Q <queues> -c <concurrency>``; settings come from
``NNCOMPRESS_*`` (the broker URL is required). Concurrency defaults to ``worker_concurrency`` for CPU
queues and is forced to 1 for ``gpu``: one job at a time per GPU.
"""

from __future__ import annotations

import argparse

from core.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description="Run an nncompress Celery worker.")
    parser.add_argument("--queues", "-Q", default="cpu", help="comma-separated: cpu, gpu (default: cpu)")
    parser.add_argument("--concurrency", "-c", type=int, default=None, help="jobs at a time (gpu: always 1)")
    parser.add_argument("--name", "-n", default=None, help="Celery node name, e.g. gpu0@%%h")
    parser.add_argument("--loglevel", "-l", default="INFO")
    args = parser.parse_args(argv)

    from workers.celery_app import create_celery_app

    settings = get_settings()
    app = create_celery_app(settings)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    concurrency = 1 if "gpu" in queues else (args.concurrency or settings.worker_concurrency)
    worker_argv = ["worker", "-Q", ",".join(queues), "-c", str(concurrency), "--loglevel", args.loglevel]
    # Mingle and gossip sync revokes between workers; jobs are cancelled through the database, never
    # revoked, and mingle alone added about 1 s to every worker start here.
    worker_argv += ["--without-mingle", "--without-gossip"]
    if args.name:
        worker_argv += ["-n", args.name]
    app.worker_main(worker_argv)


if __name__ == "__main__":
    main()
