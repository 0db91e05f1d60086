"""The admin API for F-KOD staff: partner review, suspension, overrides, admins, audit log."""


def includeme(config):
    config.include("fkod.admin.auth")
    config.include("fkod.admin.views")
    config.include("fkod.admin.ticket_views")
    config.include("fkod.admin.plugin_views")
    config.include("fkod.admin.integration_views")
    config.include("fkod.marketplace.review_views.include_admin")
    # The partner audit log is a partner route; it is added here because it
    # shares its filters and entry schema with the admin audit log.
    config.include("fkod.partners.audit_views")
    config.include("fkod.admin.plan_views")
    config.include("fkod.admin.billing_views")
