"""The service's shared core: below both the HTTP layer (``app``) and the job workers (``workers``).

Database models and sessions (``core.db``), settings, storage (local and S3), logging, domain
errors, the outboxes that deliver webhooks and MLflow runs, the dispatcher contract and the Redis
key names both sides read. It imports nothing of ``app`` or ``workers`` (``import-contracts.toml``).
"""
