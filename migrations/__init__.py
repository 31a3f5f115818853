"""Alembic migrations of the service's database (``alembic upgrade head``)."""
