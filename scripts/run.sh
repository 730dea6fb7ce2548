#!/usr/bin/env bash
# `make run`: the whole mission on an embedded default, from a fresh clone.
#   SQLite under var/, a private redis-server (unless CELERY_BROKER_URL is set), the NAVER Pay
#   sandbox, a Celery worker, beat, Flower, the metrics endpoint and the inbox (a mail catcher and
#   webhook receiver the demo merchant notifies), run together by honcho.
# Ctrl-C stops them all; running it again reuses var/ (the database and Redis data).
set -euo pipefail
cd "$(dirname "$0")/.."
export NPAY_VAR_DIR="${NPAY_VAR_DIR:-var}"   # everything make run writes lives here
mkdir -p "$NPAY_VAR_DIR/log"
NPAY_VAR_DIR="$(cd "$NPAY_VAR_DIR" && pwd)"   # absolute: redis-server changes directory

export DATABASE_URL="${DATABASE_URL:-sqlite:///$NPAY_VAR_DIR/npay-billing.db}"
export SANDBOX_PORT="${SANDBOX_PORT:-8055}"
export NAVERPAY_API_BASE="${NAVERPAY_API_BASE:-http://127.0.0.1:${SANDBOX_PORT}}"
export BILLING_WALK_INTERVAL="${BILLING_WALK_INTERVAL:-2}"
export BILLING_LEASE_SECONDS="${BILLING_LEASE_SECONDS:-30}"
export FLOWER_PORT="${FLOWER_PORT:-5555}"
export FLOWER_BASIC_AUTH="${FLOWER_BASIC_AUTH:-admin:npay-billing}"
export METRICS_PORT="${METRICS_PORT:-9808}"
export WEB_PORT="${WEB_PORT:-8060}"
# Consent links in price-change notices point at npay-billing web (a development secret here;
# set your own in production).
export BILLING_PUBLIC_URL="${BILLING_PUBLIC_URL:-http://127.0.0.1:${WEB_PORT}}"
export BILLING_CONSENT_SECRET="${BILLING_CONSENT_SECRET:-make-run-development-consent-secret}"
# Threads: charges wait on NAVER, not on our CPU (README "Which pool"; bench/RESULTS.md).
export WORKER_POOL="${WORKER_POOL:-threads}"
export WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-16}"
export SANDBOX_ARGS="${SANDBOX_ARGS:---auto-register}"
# No chain id by default: NAVER issues one to group-type merchants only, and without
# NAVERPAY_CHAIN_ID the worker sends no X-NaverPay-Chain-Id header. To try a group-type
# merchant: NAVERPAY_CHAIN_ID=sandbox-recurrent-chain-id \
#           SANDBOX_ARGS="--auto-register --require-chain-id" make run
export NPAY_DEMO="${NPAY_DEMO:-1}"
# The inbox (`npay-billing inbox`) stands in for the customers' mailboxes and the merchant's
# webhook endpoint: the worker's SMTP goes to it, and the demo merchant gets its webhook URL and
# secret, so a final failure shows up on http://127.0.0.1:$INBOX_PORT/ (not as `no_channel`).
export INBOX_PORT="${INBOX_PORT:-8025}"
export INBOX_SMTP_PORT="${INBOX_SMTP_PORT:-2525}"
export INBOX_WEBHOOK_SECRET="${INBOX_WEBHOOK_SECRET:-demo-webhook-secret}"
export SMTP_HOST="${SMTP_HOST:-127.0.0.1}"
export SMTP_PORT="${SMTP_PORT:-$INBOX_SMTP_PORT}"
export NPAY_DEMO_WEBHOOK_URL="${NPAY_DEMO_WEBHOOK_URL:-http://127.0.0.1:${INBOX_PORT}/hooks/demo}"
export NPAY_DEMO_WEBHOOK_SECRET="${NPAY_DEMO_WEBHOOK_SECRET:-$INBOX_WEBHOOK_SECRET}"
export NPAY_DEMO_EMAIL="${NPAY_DEMO_EMAIL:-1}"
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$NPAY_VAR_DIR/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

procfile="$NPAY_VAR_DIR/Procfile"
cp Procfile "$procfile"

if [ -z "${CELERY_BROKER_URL:-}" ]; then
    if ! command -v redis-server >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "make run: redis-server is missing; installing Debian's package"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
        else
            echo "make run: redis-server is missing. Install it (Debian/Ubuntu: sudo apt-get install redis-server;"
            echo "macOS: brew install redis) or point CELERY_BROKER_URL at a Redis you run." >&2
            exit 1
        fi
    fi
    REDIS_PORT="${REDIS_PORT:-6389}"
    mkdir -p "$NPAY_VAR_DIR/redis"
    export CELERY_BROKER_URL="redis://127.0.0.1:${REDIS_PORT}/0"
    echo "redis: exec redis-server --port ${REDIS_PORT} --bind 127.0.0.1 --dir $NPAY_VAR_DIR/redis --appendonly yes --save '' --loglevel warning --logfile $NPAY_VAR_DIR/log/redis.log" >> "$procfile"
    echo "make run: private redis-server on 127.0.0.1:${REDIS_PORT}, data in $NPAY_VAR_DIR/redis"
else
    echo "make run: using the broker at ${CELERY_BROKER_URL}"
fi

.venv/bin/npay-billing db upgrade
cat <<EOT
make run: database ${DATABASE_URL}
          sandbox  ${NAVERPAY_API_BASE}   (stands in for NAVER Pay)
          Flower   http://127.0.0.1:${FLOWER_PORT}   (user:password ${FLOWER_BASIC_AUTH})
          metrics  http://127.0.0.1:${METRICS_PORT}/metrics
          web      http://127.0.0.1:${WEB_PORT}/   (demo merchant page: register with NAVER Pay)
          inbox    http://127.0.0.1:${INBOX_PORT}/   (e-mails and webhooks the demo merchant's customers get)
          chain id ${NAVERPAY_CHAIN_ID:-none (set NAVERPAY_CHAIN_ID for a group-type merchant)}
          logs     $NPAY_VAR_DIR/log/worker.log $NPAY_VAR_DIR/log/beat.log
          Ctrl-C stops everything.
EOT
exec .venv/bin/honcho --no-colour -f "$procfile" -d . start
