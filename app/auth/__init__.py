"""Tenants and API keys: key hashing, the request's principal, per-tenant rate limits."""
