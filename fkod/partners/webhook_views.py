"""Cornice services for a partner's webhook endpoints and their deliveries.

Endpoints are named by ``whk_<number>`` and deliveries by the id of their
event (``evt_…``). A malformed id is a 400 naming the path parameter, and a
well-formed id that names nothing the partner can see is a 404.
"""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_MEMBER, Dumped, Page, PageQuery, operation, paginate
from fkod.core.auth.roles import role_permits
from fkod.core.errors import ValidationFailed, field_error
from fkod.core.webhooks.models import Webhook, WebhookEvent
from fkod.core.webhooks.stats import endpoint_health
from fkod.partners import schemas, webhooks

collection = Service(name="partner_webhooks", path="/api/partners/webhooks",
                     description="The partner's webhook endpoints")
# Added before ``item`` so that "events" is not read as an endpoint id.
all_deliveries = Service(name="partner_webhook_deliveries",
                         path="/api/partners/webhooks/events",
                         description="Deliveries to all the partner's endpoints")
item = Service(name="partner_webhook", path="/api/partners/webhooks/{id}",
               description="One webhook endpoint")
test = Service(name="partner_webhook_test", path="/api/partners/webhooks/{id}/test",
               description="Send a sample event to an endpoint now")
deliveries = Service(name="partner_webhook_events", path="/api/partners/webhooks/{id}/events",
                     description="Deliveries to one endpoint")
delivery = Service(name="partner_webhook_event",
                   path="/api/partners/webhooks/{id}/events/{eventId}",
                   description="One delivery with its attempts")
replay = Service(name="partner_webhook_event_replay",
                 path="/api/partners/webhooks/{id}/events/{eventId}/replay",
                 description="Send a delivery again")
rotate_secret = Service(name="partner_webhook_rotate_secret",
                        path="/api/partners/webhooks/{id}/rotate-secret",
                        description="Give an endpoint a new signing secret")
secret = Service(name="partner_webhook_secret", path="/api/partners/webhooks/{id}/secret",
                 description="An endpoint's signing secrets")
recover = Service(name="partner_webhook_recover", path="/api/partners/webhooks/{id}/recover",
                  description="Send an endpoint's failed deliveries again")
health = Service(name="partner_webhook_health", path="/api/partners/webhooks/{id}/health",
                 description="Delivery figures of an endpoint")

SERVICES = (collection, all_deliveries, item, test, deliveries, delivery, replay, rotate_secret,
            secret, recover, health)
NOT_FOUND = ((404, "not_found"),)
# For operations without a body or query schema, whose only input is the path.
BAD_PATH_ID = ((400, "validation_failed"),)
NOT_ACTIVE = ((409, "webhook_not_active"),)


def _webhook_id(request) -> int:
    value = request.matchdict["id"]
    number = schemas.parse_webhook_id(value)
    if number is None:
        raise ValidationFailed(
            f"{value!r} is not a webhook endpoint id; ids have the form whk_<number>.",
            errors=[field_error("path", "id", "must be an id of the form whk_<number>")])
    return number


def _event_id(request) -> str:
    value = request.matchdict["eventId"]
    if not schemas.is_event_id(value):
        raise ValidationFailed(
            f"{value!r} is not an event id; ids have the form evt_<letters and digits>.",
            errors=[field_error("path", "eventId", "must be an event id such as evt_1a2b3c")])
    return value


def _webhook_schema(request, **kwargs) -> schemas.WebhookSchema:
    """Return the schema that shows custom header values only to roles that may reveal secrets.

    Header values often carry the receiver's own credentials, so a member who
    may not reveal the signing secret gets only the header names.
    """
    if role_permits(request.principal.role, "webhooks:reveal_secret"):
        return schemas.WebhookWithHeaderValuesSchema(**kwargs)
    return schemas.WebhookSchema(**kwargs)


def _dump_page(request, page: Page) -> Dumped:
    return Dumped({"data": _webhook_schema(request, many=True).dump(page.items),
                   "has_more": page.next_cursor is not None, "next_cursor": page.next_cursor})


# Endpoints --------------------------------------------------------------------


@operation(collection, "POST", summary="Subscribe a URL to event types; returns its signing "
                                       "secret",
           auth=AUTH_MEMBER, permission="webhooks:write", body=schemas.CreateWebhookBody,
           response=schemas.CreatedWebhookSchema, status=201, no_store=True,
           errors=((400, "invalid_webhook_url"), (400, "invalid_event_type"),
                   (403, "partner_not_verified")))
def create_webhook(request):
    webhook, signing_secret = webhooks.create_webhook(request, request.partner,
                                                      dict(request.validated))
    result = Dumped(_webhook_schema(request).dump(webhook))
    result["secret"] = signing_secret
    return result


@operation(collection, "GET", summary="List the partner's webhook endpoints, newest first",
           auth=AUTH_MEMBER, permission="webhooks:read", query=PageQuery,
           response=schemas.WebhookSchema, paginated=True)
def list_webhooks(request):
    page = paginate(webhooks.webhooks_query(request.partner), Webhook.id, request.query,
                    request.dbsession)
    return _dump_page(request, page)


@operation(item, "GET", summary="Get one of the partner's webhook endpoints", auth=AUTH_MEMBER,
           permission="webhooks:read", response=schemas.WebhookSchema,
           errors=BAD_PATH_ID + NOT_FOUND)
def get_webhook(request):
    webhook = webhooks.get_webhook(request, _webhook_id(request))
    return Dumped(_webhook_schema(request).dump(webhook))


@operation(item, "PUT", summary="Change an endpoint's URL, event types, headers, description, "
                                "status or retries", auth=AUTH_MEMBER,
           permission="webhooks:write", body=schemas.UpdateWebhookBody,
           response=schemas.WebhookSchema,
           errors=(*NOT_FOUND, (400, "invalid_webhook_url"), (400, "invalid_event_type")))
def update_webhook(request):
    webhook = webhooks.update_webhook(request, _webhook_id(request), dict(request.validated))
    return Dumped(_webhook_schema(request).dump(webhook))


@operation(item, "DELETE", summary="Delete an endpoint; nothing more is sent to it",
           auth=AUTH_MEMBER, permission="webhooks:write", status=204,
           errors=BAD_PATH_ID + NOT_FOUND)
def delete_webhook(request):
    webhooks.delete_webhook(request, _webhook_id(request))


@operation(test, "POST", summary="POST a signed sample event to the endpoint now and report "
                                 "the response", auth=AUTH_MEMBER,
           permission="webhooks:write", body=schemas.SendTestEventBody,
           response=schemas.WebhookTestResultSchema,
           errors=(*NOT_FOUND, (400, "invalid_event_type"), (409, "no_event_type"),
                   (429, "rate_limited")))
def send_test_event(request):
    return webhooks.send_test_event(request, _webhook_id(request),
                                    request.validated.get("event_type"))


# Secrets ----------------------------------------------------------------------


@operation(rotate_secret, "POST", summary="Give an endpoint a new signing secret; the old one "
                                          "keeps signing for an overlap", auth=AUTH_MEMBER,
           permission="webhooks:write", body=schemas.RotateWebhookSecretBody,
           response=schemas.RotatedSecretSchema, no_store=True, errors=NOT_FOUND)
def rotate_webhook_secret(request):
    webhook, new_secret = webhooks.rotate_secret(request, _webhook_id(request),
                                                 request.validated.get("overlap_seconds"))
    return {"id": webhook.id, "secret": new_secret,
            "secret_rotated_at": webhook.secret_rotated_at,
            "previous_secret_expires_at": webhook.previous_secret_expires_at}


# NOTE: this GET writes an audit entry, so it needs a write transaction. It has
# one because fkod.core.db runs every request, GETs included, in a write transaction.
@operation(secret, "GET", summary="Reveal an endpoint's signing secrets; audited",
           auth=AUTH_MEMBER, permission="webhooks:reveal_secret",
           response=schemas.RevealedSecretSchema, no_store=True,
           errors=BAD_PATH_ID + NOT_FOUND)
def reveal_webhook_secret(request):
    return webhooks.reveal_secret(request, _webhook_id(request))


# Deliveries -------------------------------------------------------------------


@operation(all_deliveries, "GET", summary="List deliveries to all the partner's endpoints, "
                                          "newest first", auth=AUTH_MEMBER,
           permission="webhooks:read", query=schemas.AllDeliveriesQuery,
           response=schemas.DeliverySchema, paginated=True)
def list_all_deliveries(request):
    query = webhooks.deliveries_query(request.partner, request.query)
    return paginate(query, WebhookEvent.id, request.query, request.dbsession)


@operation(deliveries, "GET", summary="List an endpoint's deliveries, newest first",
           auth=AUTH_MEMBER, permission="webhooks:read", query=schemas.DeliveryQuery,
           response=schemas.DeliverySchema, paginated=True, errors=NOT_FOUND)
def list_deliveries(request):
    webhook = webhooks.get_webhook(request, _webhook_id(request))
    query = webhooks.deliveries_query(request.partner, request.query, webhook_id=webhook.id)
    return paginate(query, WebhookEvent.id, request.query, request.dbsession)


@operation(delivery, "GET", summary="Get one delivery with its payload and every attempt",
           auth=AUTH_MEMBER, permission="webhooks:read", response=schemas.DeliveryDetailSchema,
           errors=BAD_PATH_ID + NOT_FOUND)
def get_delivery(request):
    found, attempts = webhooks.delivery_with_attempts(request, _webhook_id(request),
                                                      _event_id(request))
    result = Dumped(schemas.DeliveryDetailSchema().dump(found))
    result["attempt_log"] = schemas.AttemptSchema(many=True).dump(attempts)
    redact = webhooks.response_body_redactor(found.webhook, show_header_values=role_permits(
        request.principal.role, "webhooks:reveal_secret"))
    for item in (result, *result["attempt_log"]):
        item["response_body"] = redact(item["response_body"])
    return result


@operation(replay, "POST", summary="Send a delivery again, in a new run of attempts if it "
                                   "has finished", auth=AUTH_MEMBER,
           permission="webhooks:write", body=schemas.ReplayDeliveryBody,
           response=schemas.DeliverySchema, status=202,
           errors=(*NOT_FOUND, *NOT_ACTIVE, (409, "delivery_in_progress")))
def replay_delivery(request):
    return webhooks.replay_delivery(request, _webhook_id(request), _event_id(request))


@operation(recover, "POST", summary="Send again every failed delivery created in a time range",
           auth=AUTH_MEMBER, permission="webhooks:write", body=schemas.RecoverDeliveriesBody,
           response=schemas.RecoveredSchema, status=202, errors=NOT_FOUND + NOT_ACTIVE)
def recover_deliveries(request):
    recovered = webhooks.recover_deliveries(request, _webhook_id(request),
                                            request.validated["since"],
                                            request.validated.get("until"))
    return {"recovered": recovered}


@operation(health, "GET", summary="Delivery figures of an endpoint: the last 24 hours of "
                                  "attempts, and its queue", auth=AUTH_MEMBER,
           permission="webhooks:read", response=schemas.WebhookHealthSchema,
           errors=BAD_PATH_ID + NOT_FOUND)
def get_webhook_health(request):
    webhook = webhooks.get_webhook(request, _webhook_id(request))
    return endpoint_health(request.dbsession, webhook)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
