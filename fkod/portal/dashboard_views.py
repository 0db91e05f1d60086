"""The partner dashboard: the onboarding checklist and the account's state."""

from __future__ import annotations

from fkod.partners.dashboard_views import DashboardQuery
from fkod.partners.onboarding import onboarding_steps
from fkod.portal.access import require_member
from fkod.portal.charts import load_query, recent_usage_charts
from fkod.portal.rendering import render

# The page that completes each checklist step.
STEP_LINKS = {
    "verify_company": "/portal/company/verification",
    "create_key": "/portal/keys/new",
    "first_call": "/portal/keys",
    "add_webhook": "/portal/webhooks/new",
    "publish_integration": "/portal/integrations",
}


def dashboard(request):
    member = require_member(request, "partner:read")
    steps = onboarding_steps(request.dbsession, member.partner)
    # Every role reads usage, and the charts carry the same numbers as the analytics API.
    mode = load_query(request, DashboardQuery())["mode"]
    usage_charts = recent_usage_charts(request, member.partner.id, mode)
    return render(request, "dashboard.html", steps=steps, step_links=STEP_LINKS,
                  done_count=sum(step.done for step in steps), nav="dashboard",
                  usage_mode=mode, usage_charts=usage_charts)
