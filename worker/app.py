"""The Celery application (``celery -A worker worker|beat|flower``)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from worker import logs

app = Celery("npay-billing", include=["worker.tasks"])
app.config_from_object("celeryconfig")


@after_setup_logger.connect
@after_setup_task_logger.connect
def _structured_logs(logger: logging.Logger, **_: Any) -> None:
    # Every handler Celery sets up gets the charge/recurrentId context and our format.
    logs.install(logger)
