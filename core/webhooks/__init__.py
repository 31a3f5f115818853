"""Webhooks of jobs: URL checks, the outbox rows written on transitions, signing, and the deliverer."""
