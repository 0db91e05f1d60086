"""Gunicorn settings for the F-KOD Partner Platform web process.

Run it as ``gunicorn -c deploy/gunicorn.conf.py``. The application is the
``[app:main]`` section of the .ini file named by ``FKOD_INI``, whose
``use = egg:fkod-partner-platform`` resolves to the app factory ``fkod:main``
through the ``paste.app_factory`` entry point in setup.cfg. The ``FKOD_GUNICORN_*``
environment variables below change the process layout without editing this
file; docs/deployment.md explains each choice.
"""

import multiprocessing
import os

# The .ini file with the [app:main] section and, usually, the logging sections.
FKOD_INI = os.path.abspath(os.environ.get("FKOD_INI", "/etc/fkod/production.ini"))

# pyramid.paster.get_app builds the app through PasteDeploy, which calls fkod:main.
wsgi_app = f"pyramid.paster:get_app({FKOD_INI!r}, 'main')"
# The .ini file's [loggers], [handlers] and [formatters] sections configure logging.
logconfig = FKOD_INI

bind = os.environ.get("FKOD_GUNICORN_BIND", "127.0.0.1:6543").split()

# The app does blocking database and Redis I/O, so each worker process runs a
# few threads; a webhook test send holds one thread until its receiver responds.
worker_class = "gthread"
workers = int(os.environ.get("FKOD_GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("FKOD_GUNICORN_THREADS", "4"))

# A worker whose main loop does not report to the master for this many seconds
# is killed and replaced. A gthread worker reports while its threads serve
# requests, so this catches a stuck process, not a slow request.
timeout = int(os.environ.get("FKOD_GUNICORN_TIMEOUT", "30"))
# After SIGTERM or a max_requests restart, a worker gets this many seconds to
# finish the requests it is serving before it is killed.
graceful_timeout = int(os.environ.get("FKOD_GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Idle keep-alive connections from the reverse proxy stay open this long.
keepalive = 5

# Each worker is replaced after serving about this many requests, which returns
# any memory a long-lived process has accumulated. The jitter spreads the
# restarts so that the workers do not all restart at the same moment.
max_requests = int(os.environ.get("FKOD_GUNICORN_MAX_REQUESTS", "5000"))
max_requests_jitter = int(os.environ.get("FKOD_GUNICORN_MAX_REQUESTS_JITTER", "500"))

# Addresses whose X-Forwarded-Proto gunicorn believes when it sets
# wsgi.url_scheme. The client address is a separate matter: the app reads
# X-Forwarded-For itself, and only from fkod.proxy.trusted_proxies.
forwarded_allow_ips = os.environ.get("FKOD_GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Each worker builds its own app, with its own database pool, Redis client and
# usage-flush thread. Building it in the master and forking would share those.
preload_app = False

# The heartbeat file of each worker lives in memory, not on a disk that may stall.
# gunicorn creates its own unlinked file there, so a shared directory is safe.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108


def child_exit(server, worker):
    """Drop the metrics files of a worker that exited, so scrapes stop showing its live gauges.

    Only in prometheus_client's multiprocess mode, which PROMETHEUS_MULTIPROC_DIR turns on.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
