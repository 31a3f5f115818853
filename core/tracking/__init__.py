"""MLflow tracking of finished jobs: an outbox written with the job's last transition, and a logger
thread that turns each entry into one MLflow run (with MLflow's own client), retrying with backoff."""
