"""Health for load balancers (``/health``) and readiness of dependencies (``/ready``)."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from cornice import Service
from marshmallow import fields

from fkod.core.api import AUTH_NONE, operation
from fkod.core.db import read_only
from fkod.core.errors import envelope_response
from fkod.core.schemas import ResponseSchema

log = logging.getLogger(__name__)

health = Service(name="health", path="/health", description="Liveness")
ready = Service(name="ready", path="/ready", description="Readiness of the dependencies")


class HealthResponse(ResponseSchema):
    status = fields.String()


class ReadyResponse(ResponseSchema):
    status = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.String())


@operation(health, "GET", summary="Whether the process answers", auth=AUTH_NONE,
           response=HealthResponse)
def get_health(request):
    return {"status": "ok"}


def _check(name, probe) -> str:
    try:
        probe()
        return "ok"
    except Exception as exc:
        log.warning("readiness check failed", extra={"check": name, "error": str(exc)[:200]})
        return "unavailable"


@operation(ready, "GET", summary="Whether the database, Redis and the broker are reachable",
           auth=AUTH_NONE, response=ReadyResponse, errors=((503, "not_ready"),))
def get_ready(request):
    registry = request.registry
    checks = {"database": _check("database", lambda: read_only(
        registry["db.engine"], lambda connection: connection.execute(sa.text("SELECT 1"))))}
    if registry["redis"] is not None:
        checks["redis"] = _check("redis", registry["redis"].ping)
    tasks = registry["tasks"]
    if not tasks.in_process:
        # The broker may use its own connection, so a ping on it checks that one too.
        checks["broker"] = _check("broker", tasks.broker.client.ping)
    elif not tasks.worker_alive():
        checks["broker"] = "unavailable"
        log.warning("readiness check failed", extra={"check": "broker",
                                                     "error": "embedded worker not running"})
    if all(value == "ok" for value in checks.values()):
        return {"status": "ok", "checks": checks}
    response = envelope_response(request, 503, "not_ready",
                                 "A dependency is unavailable: " + ", ".join(
                                     name for name, value in checks.items() if value != "ok"),
                                 headers={"Retry-After": "5"})
    return response


def includeme(config):
    config.add_cornice_service(health)
    config.add_cornice_service(ready)
