"""Cornice services of integration reviews: customers, the owning partner's reply, admins.

Reviews are named ``rev_<number>``. The list is public; writing a review
takes a customer's login token, replying a partner member's, and moderating
an admin's.
"""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_ADMIN, AUTH_MEMBER, AUTH_NONE, AUTH_USER, Dumped, operation
from fkod.marketplace import install_schemas as schemas
from fkod.marketplace import reviews

review = Service(name="marketplace_review", path="/api/marketplace/integrations/{id}/review",
                 description="The caller's review of an integration")
review_list = Service(name="marketplace_reviews",
                      path="/api/marketplace/integrations/{id}/reviews",
                      description="An integration's visible reviews")
reply = Service(name="partner_integration_review_reply",
                path="/api/partners/integrations/{id}/reviews/{review_id}/reply",
                description="The owning partner's reply to a review")
admin_review = Service(name="admin_review", path="/api/admin/reviews/{id}",
                       description="Show or hide a review")

NOT_FOUND = ((404, "not_found"),)
# The admin permission that moderating a review needs (superadmin and support roles).
MODERATE_PERMISSION = "integrations:review"


def _dump(view: dict, schema=schemas.ReviewSchema) -> Dumped:
    return Dumped(schema().dump(view))


@operation(review, "POST", summary="Review an installed integration (1 to 5 stars)",
           auth=AUTH_USER, body=schemas.ReviewBody, response=schemas.ReviewSchema, status=201,
           errors=(*NOT_FOUND, (403, "not_installed"), (403, "own_integration"),
                   (409, "review_exists")))
def create_review(request):
    return _dump(reviews.create_review(request, request.matchdict["id"],
                                       dict(request.validated)))


@operation(review, "PUT", summary="Change the given fields of the caller's review",
           auth=AUTH_USER, body=schemas.UpdateReviewBody, response=schemas.ReviewSchema,
           errors=NOT_FOUND)
def update_review(request):
    return _dump(reviews.update_review(request, request.matchdict["id"],
                                       dict(request.validated)))


@operation(review, "DELETE", summary="Delete the caller's review", auth=AUTH_USER, status=204,
           errors=NOT_FOUND)
def delete_review(request):
    reviews.delete_review(request, request.matchdict["id"])


@operation(review_list, "GET", summary="List an integration's visible reviews, newest first "
                                       "by default",
           auth=AUTH_NONE, query=schemas.ReviewListQuery, response=schemas.ReviewSchema,
           paginated=True, errors=NOT_FOUND)
def list_reviews(request):
    return reviews.list_reviews(request, request.matchdict["id"], request.query)


@operation(reply, "POST", summary="Reply to a review of one of the partner's integrations; "
                                  "posting again replaces the reply",
           auth=AUTH_MEMBER, permission="integrations:write", body=schemas.ReplyBody,
           response=schemas.ReviewSchema, errors=NOT_FOUND)
def reply_to_review(request):
    return _dump(reviews.reply(request, request.matchdict["id"], request.matchdict["review_id"],
                               request.validated["text"]))


@operation(admin_review, "PUT", summary="Show or hide a review, with a reason; the "
                                        "integration's rating follows",
           auth=AUTH_ADMIN, permission=MODERATE_PERMISSION, body=schemas.ModerateReviewBody,
           response=schemas.AdminReviewSchema, errors=NOT_FOUND)
def moderate_review(request):
    view = reviews.moderate(request, request.matchdict["id"], request.validated["status"],
                            request.validated["reason"])
    return _dump(view, schemas.AdminReviewSchema)


def includeme(config):
    for service in (review, review_list, reply):
        config.add_cornice_service(service)


def include_admin(config):
    """Add the admin moderation service; fkod.admin includes it beside the other admin routes."""
    config.add_cornice_service(admin_review)
