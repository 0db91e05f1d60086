"""The analytics page: calls, errors, latency, installs and revenue over a chosen range."""

from __future__ import annotations

import datetime as dt

from fkod.core.metering.report import partner_usage_summary
from fkod.partners import dashboard as analytics_service
from fkod.partners.dashboard_views import AnalyticsQuery
from fkod.portal.access import require_member
from fkod.portal.charts import analytics_charts, latency_chart, load_query
from fkod.portal.rendering import render

ROUTES = (
    ("portal_analytics", "/portal/analytics", "analytics", ("GET",),
     "Show charts of calls, errors, latency, installs and revenue per day or month"),
)


def analytics(request):
    member = require_member(request, "billing:read")
    query = load_query(request, AnalyticsQuery())
    charts = analytics_charts(request.dbsession, member.partner.id, mode=query["mode"],
                              granularity=query["granularity"], start=query["start"],
                              end=query["end"], metrics=query["metric"])
    since = dt.datetime.combine(query["start"], dt.time())
    until = dt.datetime.combine(query["end"] + analytics_service.ONE_DAY, dt.time())
    summary = partner_usage_summary(request.dbsession, member.partner.id, since,
                                    until)[query["mode"]]
    return render(request, "analytics.html", charts=charts, latency=latency_chart(summary),
                  summary=summary, query=query, granularities=analytics_service.GRANULARITIES,
                  modes=analytics_service.MODES, nav="dashboard")
