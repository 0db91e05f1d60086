"""Benchmark plugin: ``GET /bench/mentors`` lists sandbox mentors without the API gateway.

It runs the query of ``GET /api/v1/mentors`` for a test-mode key, through the
same pagination and response schema, but with ``auth=AUTH_NONE``, so no key
check, rate limit or metering takes place. bench/bench_gateway_gunicorn.py
puts this folder on PYTHONPATH of its gunicorn processes only, which makes the
entry point in fkod_bench_plugin-1.0.dist-info visible to the plugin loader.
Never install it in a real deployment: the route is unauthenticated.
"""

from __future__ import annotations

from types import SimpleNamespace

from cornice import Service

from fkod.core.api import AUTH_NONE, PageQuery, operation, paginate
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


@hookimpl
def fkod_include(config):
    config.add_cornice_service(bare_mentors)
