"""The marketplace: integrations partners publish, and the installs and reviews of customers.

Each module below adds its Cornice services through its own ``includeme``.
"""


def includeme(config):
    config.include("fkod.marketplace.integration_views")
    config.include("fkod.marketplace.install_views")
    config.include("fkod.marketplace.review_views")
    config.include("fkod.marketplace.reactions")
    config.include("fkod.marketplace.views")
