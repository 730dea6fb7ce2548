"""The Celery application (``celery -A worker worker|beat|flower``)."""

from __future__ import annotations

from celery import Celery

app = Celery("npay-billing", include=["worker.tasks"])
app.config_from_object("celeryconfig")
