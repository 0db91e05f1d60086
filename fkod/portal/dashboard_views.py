"""The partner dashboard: the onboarding checklist and the account's state."""

from __future__ import annotations

from fkod.partners.onboarding import onboarding_steps
from fkod.portal.access import require_member
from fkod.portal.rendering import render

# The page that completes each checklist step. Verification and integrations
# have no portal page yet, so those steps link to the API playground.
# TODO: link verification and integrations to portal pages once they exist.
STEP_LINKS = {
    "verify_company": "/developers/playground",
    "create_key": "/portal/keys/new",
    "first_call": "/portal/keys",
    "add_webhook": "/portal/webhooks/new",
    "publish_integration": "/developers/playground",
}


def dashboard(request):
    member = require_member(request, "partner:read")
    steps = onboarding_steps(request.dbsession, member.partner)
    return render(request, "dashboard.html", steps=steps, step_links=STEP_LINKS,
                  done_count=sum(step.done for step in steps), nav="dashboard")
