"""Celery settings, read from the environment; safe for money.

Tasks are named by string here (``scheduler.walk``); the app lives in ``worker``.
"""

import os

from celery.schedules import crontab

from worker.settings import reconcile_time

broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
broker_connection_retry_on_startup = True
# kombu's Redis transport with one reused client per channel (worker/broker.py: kombu builds a
# new redis client per publish and ack otherwise); BILLING_BROKER_TRANSPORT=kombu for kombu's own.
if broker_url.split("://", 1)[0] in ("redis", "rediss") and os.environ.get(
        "BILLING_BROKER_TRANSPORT", "billing") != "kombu":
    broker_transport = "worker.broker:Transport"
# A message is acknowledged only after its task finished; a killed worker's message goes back.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Longer than any task (hard limit below), so Redis never redelivers a running task.
broker_transport_options = {"visibility_timeout": int(os.environ.get("BILLING_VISIBILITY_TIMEOUT", "3600"))}
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
result_backend = None
task_soft_time_limit = int(os.environ.get("BILLING_TASK_SOFT_TIME_LIMIT", "240"))
task_time_limit = int(os.environ.get("BILLING_TASK_TIME_LIMIT", "300"))
timezone = "UTC"
enable_utc = True
# Events for Flower (BILLING_TASK_EVENTS=0 turns them off: three Redis publishes per task, a
# noticeable share of a charge's CPU at hundreds of charges per second; see bench/RESULTS.md).
worker_send_task_events = os.environ.get("BILLING_TASK_EVENTS", "1") != "0"
task_send_sent_event = worker_send_task_events
# Celery's consumer, with task events flushed in batches (worker/consumer.py;
# BILLING_EVENT_FLUSH_MS, default 50 ms; 0 flushes every loop turn as Celery does).
worker_consumer = "worker.consumer:Consumer"
worker_hijack_root_logger = False
# The walk's beat entry (never one entry per subscription); issue 9's two are below.
beat_schedule = {
    "walk": {
        "task": "scheduler.walk",
        "schedule": float(os.environ.get("BILLING_WALK_INTERVAL", "10")),
        "options": {"expires": float(os.environ.get("BILLING_WALK_INTERVAL", "10")) * 3},
    },
}
# Reconciliation (정산 대사): once a day, BILLING_RECONCILE_AT (KST, default 01:00) reconciles
# the previous KST day. Beat runs in UTC here; KST is UTC+9 all year (no DST).
_reconcile_hour, _reconcile_minute = reconcile_time(os.environ)
beat_schedule["reconcile"] = {
    "task": "worker.reconcile",
    "schedule": crontab(hour=(_reconcile_hour - 9) % 24, minute=_reconcile_minute),
    "options": {"expires": 6 * 3600},
}
# Issue 9: their own entries, so a failing NAVER list call never stops the walk (paced by
# BILLING_REGISTRATION_SYNC_PAGES pages per merchant per run).
beat_schedule["registration-sync"] = {
    "task": "worker.sync_registrations",
    "schedule": float(os.environ.get("BILLING_REGISTRATION_SYNC_INTERVAL", "300")),
    "options": {"expires": float(os.environ.get("BILLING_REGISTRATION_SYNC_INTERVAL", "300"))},
}
beat_schedule["followups"] = {
    "task": "worker.followups",
    "schedule": float(os.environ.get("BILLING_FOLLOWUP_INTERVAL", "60")),
    "options": {"expires": float(os.environ.get("BILLING_FOLLOWUP_INTERVAL", "60"))},
}
beat_schedule_filename = os.environ.get("BILLING_BEAT_SCHEDULE", "var/celerybeat-schedule")
