"""The developer API: a partner's OAuth applications.

Each module below adds its Cornice services through its own ``includeme``.
"""


def includeme(config):
    config.include("fkod.developers.application_views")
    config.include("fkod.developers.views")
    config.include("fkod.developers.documentation_views")
