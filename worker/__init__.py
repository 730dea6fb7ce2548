"""The billing worker: Celery app, thin tasks, the charge state machine, the NAVER Pay client.

``celery -A worker worker`` finds :data:`app` here.
"""

from worker.app import app

__all__ = ["app"]
