"""Webhook pages: list, create, detail with the delivery log, test, secrets, replay."""

from __future__ import annotations

from pyramid.httpexceptions import HTTPNotFound, HTTPSeeOther

from fkod.core.api import paginate
from fkod.core.errors import ApiError
from fkod.core.webhooks.catalog import pattern_matches
from fkod.core.webhooks.models import Webhook, WebhookEvent
from fkod.partners import schemas, webhooks
from fkod.portal import forms
from fkod.portal.access import require_member
from fkod.portal.rendering import render

# The overlaps offered when a signing secret is rotated, in seconds.
OVERLAPS = ((0, "None: the old secret stops now"), (3600, "1 hour"), (86400, "24 hours"),
            (7 * 86400, "7 days"))


def _webhook_id(request) -> int:
    number = schemas.parse_webhook_id(request.matchdict["id"])
    if number is None:
        raise HTTPNotFound()
    return number


def _event_id(request) -> str:
    value = request.matchdict["event_id"]
    if not schemas.is_event_id(value):
        raise HTTPNotFound()
    return value


def _detail_path(request, webhook_id: int) -> str:
    return request.route_path("portal_webhook", id=f"whk_{webhook_id}")


def _available_events(request):
    host = request.registry["plugins"]
    return host.event_catalog.available(host.is_enabled)


def _new_webhook_page(request, form: forms.Form, status: int = 200):
    return render(request, "webhook_new.html", status=status, form=form,
                  event_types=_available_events(request), nav="webhooks")


def webhook_list(request):
    if request.method == "POST":
        return _create_webhook(request)
    member = require_member(request, "webhooks:read")
    page = paginate(webhooks.webhooks_query(member.partner), Webhook.id,
                    forms.page_query(request), request.dbsession)
    return render(request, "webhooks.html", webhooks=page.items, next_cursor=page.next_cursor,
                  nav="webhooks")


def webhook_new(request):
    require_member(request, "webhooks:write")
    return _new_webhook_page(request, forms.Form(values={"mode": "test", "event_types": []}))


def _create_webhook(request):
    member = require_member(request, "webhooks:write")
    form = forms.Form()
    posted = forms.posted_values(request, lists=("event_types",))
    form.values = {name: posted.get(name, "") for name in ("url", "description")}
    form.values.update(mode=posted.get("mode", "test"), event_types=posted["event_types"])
    data = {name: posted[name] for name in ("url", "mode", "description", "event_types")
            if name in posted}
    if not data["event_types"]:
        form.add_error("event_types", "Choose at least one event type.")
    loaded = forms.load(schemas.CreateWebhookBody(), data, form) if form.valid else None
    if loaded is None:
        request.tm.doom()
        return _new_webhook_page(request, form, status=400)
    try:
        webhook, secret = webhooks.create_webhook(request, member.partner, dict(loaded))
    except ApiError as error:
        forms.add_api_error(form, error)
        request.tm.doom()
        return _new_webhook_page(request, form, status=error.status)
    return render(request, "webhook_secret.html", webhook=webhook, secret=secret,
                  previous_secret=None, created=True, nav="webhooks")


def webhook_detail(request):
    member = require_member(request, "webhooks:read")
    webhook = webhooks.get_webhook(request, _webhook_id(request))
    query = webhooks.deliveries_query(member.partner, {}, webhook_id=webhook.id)
    page = paginate(query, WebhookEvent.id, forms.page_query(request), request.dbsession)
    covered = [item for item in _available_events(request)
               if any(pattern_matches(pattern, item.name)
                      for pattern in webhook.event_types)]
    return render(request, "webhook_detail.html", webhook=webhook, deliveries=page.items,
                  next_cursor=page.next_cursor, test_event_types=covered, overlaps=OVERLAPS,
                  can_write=member.can("webhooks:write"),
                  can_reveal=member.can("webhooks:reveal_secret"), nav="webhooks")


def webhook_test(request):
    require_member(request, "webhooks:write")
    webhook_id = _webhook_id(request)
    posted = forms.posted_values(request)
    form = forms.Form()
    data = {"event_type": posted["event_type"]} if "event_type" in posted else {}
    loaded = forms.load(schemas.SendTestEventBody(), data, form)
    session = request.portal_session
    if loaded is None:
        session.flash("The test event was not sent: "
                      + " ".join(form.field_errors("event_type")), "error")
        return HTTPSeeOther(location=_detail_path(request, webhook_id))
    try:
        result = webhooks.send_test_event(request, webhook_id, loaded.get("event_type"))
    except ApiError as error:
        request.tm.doom()
        session.flash(f"The test event was not sent: {error.message}", "error")
        return HTTPSeeOther(location=_detail_path(request, webhook_id))

    if result["status_code"] is None:
        outcome = f"failed: {result['error']}"
    else:
        outcome = f"the receiver answered {result['status_code']}"
    session.flash(f"Test event {result['event_type']} ({result['event_id']}) sent; {outcome} "
                  f"in {result['latency_ms']} ms.",
                  "success" if result["success"] else "error")
    return HTTPSeeOther(location=_detail_path(request, webhook_id))


def webhook_secret(request):
    """Reveal the signing secrets; a POST, because each reveal is audited."""
    require_member(request, "webhooks:reveal_secret")
    webhook = webhooks.get_webhook(request, _webhook_id(request))
    revealed = webhooks.reveal_secret(request, webhook.id)
    return render(request, "webhook_secret.html", webhook=webhook, secret=revealed["secret"],
                  previous_secret=revealed["previous_secret"], created=False, nav="webhooks")


def webhook_rotate_secret(request):
    require_member(request, "webhooks:write")
    webhook_id = _webhook_id(request)
    posted = forms.posted_values(request)
    forms.integer_field(posted, "overlap_seconds")
    form = forms.Form()
    data = {"overlap_seconds": posted["overlap_seconds"]} if "overlap_seconds" in posted else {}
    loaded = forms.load(schemas.RotateWebhookSecretBody(), data, form)
    if loaded is None:
        request.portal_session.flash(
            "The secret was not rotated: " + " ".join(form.field_errors("overlap_seconds")),
            "error")
        return HTTPSeeOther(location=_detail_path(request, webhook_id))
    webhook, secret = webhooks.rotate_secret(request, webhook_id, loaded.get("overlap_seconds"))
    return render(request, "webhook_secret.html", webhook=webhook, secret=secret,
                  previous_secret=None, created=False, rotated=True, nav="webhooks")


def delivery_detail(request):
    member = require_member(request, "webhooks:read")
    delivery, attempts = webhooks.delivery_with_attempts(request, _webhook_id(request),
                                                         _event_id(request))
    redact = webhooks.response_body_redactor(
        delivery.webhook, show_header_values=member.can("webhooks:reveal_secret"))
    return render(request, "delivery_detail.html", delivery=delivery, attempts=attempts,
                  event_id=delivery.event.public_id, webhook_id=delivery.webhook_id,
                  redact=redact, can_write=member.can("webhooks:write"), nav="webhooks")


def delivery_replay(request):
    require_member(request, "webhooks:write")
    webhook_id, event_id = _webhook_id(request), _event_id(request)
    session = request.portal_session
    try:
        webhooks.replay_delivery(request, webhook_id, event_id)
    except ApiError as error:
        if error.status == 404:
            raise
        request.tm.doom()
        session.flash(f"The delivery was not replayed: {error.message}", "error")
    else:
        session.flash(f"Delivery {event_id} is queued again.")
    return HTTPSeeOther(location=request.route_path("portal_delivery", id=f"whk_{webhook_id}",
                                                    event_id=event_id))
