"""Pydantic request and response bodies of the HTTP API (kept apart from the table models)."""
