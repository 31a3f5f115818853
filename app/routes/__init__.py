"""One router per resource: models, jobs (with events and artifacts), health."""
