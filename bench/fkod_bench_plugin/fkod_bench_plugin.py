"""Benchmark plugin: ``GET /bench/mentors`` lists sandbox mentors without the API gateway.

It runs the query of ``GET /api/v1/mentors`` for a test-mode key, through the
same pagination and response schema, but with ``auth=AUTH_NONE``, so no key
check, rate limit or metering takes place. bench/bench_gateway_gunicorn.py
puts this folder on PYTHONPATH of its gunicorn processes only, which makes the
entry point in fkod_bench_plugin-1.0.dist-info visible to the plugin loader.
``GET /bench/unmetered/mentors`` goes through the whole gateway but drops its
metering callback, for the metering on/off comparison. Never install this
plugin in a real deployment: ``/bench/mentors`` is unauthenticated.
"""

from __future__ import annotations

from types import SimpleNamespace

from cornice import Service

from fkod.core import gateway
from fkod.core.api import AUTH_API_KEY, AUTH_NONE, PageQuery, operation, paginate
from fkod.core.hookspecs import hookimpl
from fkod.plugins.learning import schemas, services
from fkod.plugins.learning.models import Mentor

# visible_mentors reads only ``livemode`` from the principal.
TEST_MODE_PRINCIPAL = SimpleNamespace(livemode=False)

bare_mentors = Service(name="bench_mentors", path="/bench/mentors",
                       description="Sandbox mentors without the gateway (benchmark only)")


@operation(bare_mentors, "GET", summary="List sandbox mentors without the gateway",
           auth=AUTH_NONE, query=PageQuery, response=schemas.MentorSchema, paginated=True)
def list_bare_mentors(request):
    return paginate(services.visible_mentors(TEST_MODE_PRINCIPAL), Mentor.id, request.query,
                    request.dbsession, descending=False)


unmetered_mentors = Service(name="bench_mentors_unmetered", path="/bench/unmetered/mentors",
                            description="Sandbox mentors through the gateway, not metered")


@operation(unmetered_mentors, "GET", summary="List sandbox mentors through the gateway, unmetered",
           auth=AUTH_API_KEY, scope="mentors:read", query=PageQuery,
           response=schemas.MentorSchema, paginated=True)
def list_unmetered_mentors(request):
    # The gateway's response callback records usage (and sets the rate-limit
    # and version headers); dropping it leaves every other gateway step in place.
    request.response_callbacks.remove(gateway._meter)
    return paginate(services.visible_mentors(request.principal), Mentor.id, request.query,
                    request.dbsession, descending=False)


@hookimpl
def fkod_include(config):
    config.add_cornice_service(bare_mentors)
    config.add_cornice_service(unmetered_mentors)
