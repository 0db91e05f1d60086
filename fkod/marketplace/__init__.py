"""The marketplace: integrations partners publish, and the installs and reviews of customers.

Each module below adds its Cornice services through its own ``includeme``.
"""


def includeme(config):
    pass
