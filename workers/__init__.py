"""Job execution: the Celery app, the embedded dispatcher and the job child process."""
