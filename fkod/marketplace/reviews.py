"""Customer reviews of integrations, the owning partner's replies, and admin moderation.

Only a user who installed an integration (even if since uninstalled) may
review it, never a member of the partner that owns it, and once. The
integration's ``rating`` and ``review_count`` are recomputed from its visible
reviews in the transaction that changes a review, after its row is locked:
``SELECT … FOR UPDATE`` on PostgreSQL, and on SQLite the write lock that
``BEGIN IMMEDIATE`` already holds. Concurrent reviews therefore recompute one
after the other and the stored values stay exact.
"""

from __future__ import annotations

import logging
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from fkod.core import audit
from fkod.core.api import Page, encode_cursor
from fkod.core.auth.models import PartnerMember, User
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, Forbidden, NotFound, ValidationFailed, field_error
from fkod.core.ids import parse_id
from fkod.marketplace.catalog import get_listed_integration
from fkod.marketplace.models import Integration, IntegrationInstall, IntegrationReview

log = logging.getLogger(__name__)

CENTS = Decimal("0.01")
# Shown for an author without a name; reviews never show an email address.
ANONYMOUS_AUTHOR = "F-KOD user"


# Rating ---------------------------------------------------------------------------------


def lock_integration(session, integration_id: int) -> Integration | None:
    """Load the integration with a row lock on PostgreSQL, so rating updates serialize."""
    return session.scalar(sa.select(Integration).where(Integration.id == integration_id)
                          .with_for_update())


def recompute_rating(session, integration: Integration) -> None:
    """Set rating (mean of visible reviews, two decimals, half up; None without one) and count."""
    session.flush()
    count, total = session.execute(
        sa.select(sa.func.count(IntegrationReview.id), sa.func.sum(IntegrationReview.rating))
        .where(IntegrationReview.integration_id == integration.id,
               IntegrationReview.status == "visible")).one()
    integration.review_count = count
    integration.rating = (
        (Decimal(total) / Decimal(count)).quantize(CENTS, rounding=ROUND_HALF_UP)
        if count else None)
    session.flush()


# Views of reviews -------------------------------------------------------------------------


def review_views(session, reviews: list[IntegrationReview]) -> list[dict]:
    """Shape reviews for ReviewSchema with their authors' names and install state."""
    user_ids = {review.user_id for review in reviews}
    names = {}
    installed = set()
    if reviews:
        names = dict(session.execute(
            sa.select(User.id, User.name).where(User.id.in_(user_ids))).all())
        installed = set(session.execute(
            sa.select(IntegrationInstall.integration_id, IntegrationInstall.user_id).where(
                IntegrationInstall.user_id.in_(user_ids),
                IntegrationInstall.integration_id.in_({review.integration_id
                                                       for review in reviews}),
                IntegrationInstall.status == "active")).all())
    return [review_view(review, names.get(review.user_id),
                        (review.integration_id, review.user_id) in installed)
            for review in reviews]


def review_view(review: IntegrationReview, author_name: str | None,
                still_installed: bool) -> dict:
    reply = None
    if review.reply_body is not None:
        reply = {"text": review.reply_body, "replied_at": review.replied_at}
    return {
        "id": review.id, "integration_id": review.integration_id, "rating": review.rating,
        "title": review.title, "body": review.body,
        "author": {"display_name": author_name or ANONYMOUS_AUTHOR},
        "still_installed": still_installed, "reply": reply, "status": review.status,
        "moderation_reason": review.moderation_reason, "user_id": review.user_id,
        "created_at": review.created_at, "updated_at": review.updated_at,
    }


def one_view(session, review: IntegrationReview) -> dict:
    return review_views(session, [review])[0]


# Customer services ----------------------------------------------------------------------


def _own_review(session, integration_id: int, user_id: int) -> IntegrationReview | None:
    return session.scalar(sa.select(IntegrationReview).where(
        IntegrationReview.integration_id == integration_id,
        IntegrationReview.user_id == user_id))


def caller_review(request, integration: Integration) -> dict | None:
    """Return the caller's review of ``integration`` shaped for ReviewSchema, or None."""
    review = _own_review(request.dbsession, integration.id, request.user.id)
    return None if review is None else one_view(request.dbsession, review)


def _review_exists(integration: Integration) -> Conflict:
    return Conflict(f"You already reviewed int_{integration.id}; change it with PUT or remove "
                    f"it with DELETE on the same path.", code="review_exists")


def create_review(request, integration_public_id: str, data: dict) -> dict:
    session = request.dbsession
    user = request.user
    integration = get_listed_integration(request, integration_public_id, for_update=True)

    is_member = session.scalar(sa.select(PartnerMember.id).where(
        PartnerMember.partner_id == integration.partner_id, PartnerMember.user_id == user.id))
    if is_member is not None:
        raise Forbidden("Members of the partner that publishes an integration cannot review it.",
                        code="own_integration")
    installed = session.scalar(sa.select(IntegrationInstall.id).where(
        IntegrationInstall.integration_id == integration.id,
        IntegrationInstall.user_id == user.id))
    if installed is None:
        raise Forbidden("Only customers who installed an integration can review it; install "
                        "it first.", code="not_installed")
    if _own_review(session, integration.id, user.id) is not None:
        raise _review_exists(integration)

    review = IntegrationReview(integration_id=integration.id, user_id=user.id,
                               rating=data["rating"], title=data.get("title"),
                               body=data.get("body"), status="visible")
    try:
        with session.begin_nested():
            session.add(review)
    except sa.exc.IntegrityError:
        raise _review_exists(integration) from None
    recompute_rating(session, integration)
    log.info("review created", extra={"review_id": review.id, "integration_id": integration.id,
                                      "user_id": user.id})
    return one_view(session, review)


def _caller_review(request, integration_public_id: str) -> tuple[Integration, IntegrationReview]:
    """Lock the integration and return it with the caller's review; 404 without one."""
    number = parse_id("int", integration_public_id, noun="integration")
    integration = lock_integration(request.dbsession, number)
    review = _own_review(request.dbsession, number, request.user.id) if integration else None
    if review is None:
        raise NotFound(f"You have not reviewed {integration_public_id}.", code="not_found")
    return integration, review


def update_review(request, integration_public_id: str, data: dict) -> dict:
    """Change the given fields of the caller's review, wherever the integration is listed."""
    integration, review = _caller_review(request, integration_public_id)
    changed = sorted(name for name, value in data.items() if getattr(review, name) != value)
    for name in changed:
        setattr(review, name, data[name])
    if changed:
        review.updated_at = utcnow()
    recompute_rating(request.dbsession, integration)
    log.info("review updated", extra={"review_id": review.id, "changed": changed})
    return one_view(request.dbsession, review)


def delete_review(request, integration_public_id: str) -> None:
    """Delete the caller's review.

    A review an admin has hidden loses its title and text but keeps its row, so
    deleting it and posting again cannot undo the moderation.
    """
    integration, review = _caller_review(request, integration_public_id)
    if review.status == "hidden":
        review.title = None
        review.body = None
        request.dbsession.flush()
        log.info("hidden review emptied", extra={"review_id": review.id,
                                                  "integration_id": integration.id})
        return
    request.dbsession.delete(review)
    recompute_rating(request.dbsession, integration)
    log.info("review deleted", extra={"review_id": review.id, "integration_id": integration.id})


def _after_cursor(session, select, sort_key, review_id, cursor: int, descending: bool):
    last_value = session.scalar(select.with_only_columns(sort_key).where(review_id == cursor))
    if last_value is None:
        raise ValidationFailed("The cursor does not belong to this list.", errors=[
            field_error("querystring", "cursor", "Not a cursor this API returned.")])
    if descending:
        return sa.or_(sort_key < last_value, sa.and_(sort_key == last_value, review_id < cursor))
    return sa.or_(sort_key > last_value, sa.and_(sort_key == last_value, review_id > cursor))


def list_reviews(request, integration_public_id: str, query: dict) -> Page:
    """Return one page of an integration's visible reviews in the order of ``query["sort"]``.

    The cursor contains the last review's id. A rating sort continues after that
    review's current rating, so a review edited between two pages can appear
    twice or not at all.
    """
    session = request.dbsession
    integration = get_listed_integration(request, integration_public_id)
    select = sa.select(IntegrationReview).where(
        IntegrationReview.integration_id == integration.id,
        IntegrationReview.status == "visible")
    sort = query["sort"]
    descending = sort.startswith("-")
    review_id = IntegrationReview.id
    cursor = query.get("cursor")

    if sort.lstrip("-") == "rating":
        sort_key = IntegrationReview.rating
        order = ((sort_key.desc(), review_id.desc()) if descending
                 else (sort_key.asc(), review_id.asc()))
        if cursor is not None:
            select = select.where(_after_cursor(session, select, sort_key, review_id, cursor,
                                                descending))
    else:
        # Ids grow with creation time, so created_at sorts by id.
        order = (review_id.desc(),) if descending else (review_id.asc(),)
        if cursor is not None:
            select = select.where(review_id < cursor if descending else review_id > cursor)

    rows = session.scalars(select.order_by(*order).limit(query["limit"] + 1)).all()
    has_more = len(rows) > query["limit"]
    rows = rows[:query["limit"]]
    next_cursor = encode_cursor(rows[-1].id) if has_more and rows else None
    return Page(review_views(session, rows), next_cursor)


# Partner replies ----------------------------------------------------------------------


def integration_reviews_query(integration: Integration):
    """Select the visible reviews of an integration, listed or not, for its partner's pages."""
    return sa.select(IntegrationReview).where(
        IntegrationReview.integration_id == integration.id,
        IntegrationReview.status == "visible")


def reply(request, integration_public_id: str, review_public_id: str, text: str) -> dict:
    """Set the owning partner's reply on a review; posting again replaces it."""
    session = request.dbsession
    integration_id = parse_id("int", integration_public_id, noun="integration")
    review_id = parse_id("rev", review_public_id, noun="review")
    review = session.scalar(
        sa.select(IntegrationReview)
        .join(Integration, Integration.id == IntegrationReview.integration_id)
        .where(IntegrationReview.id == review_id, Integration.id == integration_id,
               Integration.partner_id == request.partner.id))
    if review is None:
        raise NotFound(f"No review {review_public_id} on integration {integration_public_id}.")
    replaced = review.reply_body is not None
    review.reply_body = text
    review.reply_user_id = request.user.id
    review.replied_at = utcnow()
    session.flush()
    audit.record(request, "review.replied", partner_id=request.partner.id,
                 target_type="review", target_id=f"rev_{review.id}",
                 details={"integration_id": f"int_{integration_id}", "replaced": replaced})
    return one_view(session, review)


# Admin moderation -----------------------------------------------------------------------


def moderate(request, review_public_id: str, status: str, reason: str) -> dict:
    """Show or hide a review with a reason; the integration's rating follows."""
    session = request.dbsession
    review_id = parse_id("rev", review_public_id, noun="review")
    integration_id = session.scalar(sa.select(IntegrationReview.integration_id)
                                    .where(IntegrationReview.id == review_id))
    if integration_id is None:
        raise NotFound(f"No review with id {review_public_id!r}.")
    integration = lock_integration(session, integration_id)
    review = session.get(IntegrationReview, review_id, populate_existing=True)
    if review is None:
        raise NotFound(f"No review with id {review_public_id!r}.")

    previous = review.status
    review.status = status
    review.moderation_reason = reason
    review.updated_at = utcnow()
    recompute_rating(session, integration)
    audit.record(request, "review.moderated", partner_id=integration.partner_id,
                 target_type="review", target_id=f"rev_{review.id}",
                 details={"from_status": previous, "to_status": status,
                          "integration_id": f"int_{integration.id}"})
    return one_view(session, review)
