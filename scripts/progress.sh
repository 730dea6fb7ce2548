#!/usr/bin/env bash
# The `progress` process of `make run`: seed the demo once (when the database has no
# subscription yet), then show live progress until Ctrl-C.
set -u
for _ in $(seq 1 100); do
    .venv/bin/python -c "import httpx,os,sys; httpx.get(os.environ['NAVERPAY_API_BASE'] + '/_sandbox/health', timeout=1).raise_for_status()" 2>/dev/null && break
    sleep 0.2
done
if [ "${NPAY_DEMO:-1}" = 1 ]; then
    .venv/bin/npay-billing demo --if-empty || echo "progress: demo seeding failed (see above); continuing"
fi
exec .venv/bin/npay-billing watch --interval "${WATCH_INTERVAL:-2}"
