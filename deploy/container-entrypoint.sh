#!/bin/sh
# Start the role named by the container's command: web, worker, scheduler or
# migrate. "healthcheck" is what the image's HEALTHCHECK runs. Any other
# command runs as given, such as "fkod jobs list /srv/fkod/production.ini".
set -eu
role="${1:-web}"
case "$role" in
    web)
        exec gunicorn -c /srv/fkod/deploy/gunicorn.conf.py ;;
    worker|scheduler|migrate)
        exec fkod "$role" "$FKOD_INI" ;;
    healthcheck)
        # Only the web role serves HTTP. For a worker or scheduler the check
        # passes while its process runs; a process that exits ends the container.
        if tr '\0' ' ' < /proc/1/cmdline | grep -q gunicorn; then
            exec python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:6543/health', timeout=2).status == 200 else 1)"
        fi
        exit 0 ;;
    *)
        exec "$@" ;;
esac
