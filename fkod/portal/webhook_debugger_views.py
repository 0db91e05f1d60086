"""The webhook signature debugger page: what a receiver got, checked and explained.

The page runs the same check as ``POST /api/webhooks/{id}/verify`` and writes
nothing to the database.
"""

from __future__ import annotations

from fkod.core.webhooks import debugger
from fkod.partners import webhooks
from fkod.partners.webhook_verify_views import VerifyWebhookBody, check_signature
from fkod.portal import forms
from fkod.portal.access import require_member
from fkod.portal.rendering import render
from fkod.portal.webhook_views import _webhook_id

ROUTES = (
    ("portal_webhook_debugger", "/portal/webhooks/{id}/debugger", "webhook_debugger",
     ("GET", "POST"), "Check a signature a receiver got and see why it does not verify"),
)

# The form's fields; the payload is kept exactly as typed, without trimming.
FIELDS = ("payload", "signature", "timestamp", "webhook_id")


def webhook_debugger(request):
    require_member(request, "webhooks:read")
    webhook = webhooks.get_webhook(request, _webhook_id(request))
    form = forms.Form()
    if request.method != "POST":
        return render(request, "webhook_debugger.html", webhook=webhook, form=form,
                      diagnosis=None, nav="webhooks")

    # posted_values leaves out blank fields, so an empty timestamp is "not given".
    posted = forms.posted_values(request)
    form.values = {name: posted[name] for name in FIELDS if name in posted}
    loaded = forms.load(VerifyWebhookBody(), dict(form.values), form)
    diagnosis = None
    if loaded is not None:
        try:
            diagnosis = check_signature(request, webhook, loaded)
        except debugger.MalformedInput as exc:
            form.add_error(exc.field, exc.description)
    status = 200 if form.valid else 400
    return render(request, "webhook_debugger.html", status=status, webhook=webhook, form=form,
                  diagnosis=diagnosis, nav="webhooks")
