"""Webhook dispatch: event catalog, outbox, signing, delivery, retries and the sweeper."""

from __future__ import annotations


def includeme(config):
    """Set up the secret vault, the delivery actor and the periodic sweeper."""
    from fkod.core.webhooks.delivery import SWEEP_ACTOR, DeliveryWorker
    from fkod.core.webhooks.outbox import DELIVER_ACTOR
    from fkod.core.webhooks.vault import SecretVault

    registry = config.registry
    settings = config.get_settings()
    vault = SecretVault(settings["fkod.secrets.webhook_encryption_key"])
    tasks = registry["tasks"]
    worker = DeliveryWorker(registry["db.engine"], registry["db.session_factory"], vault,
                            settings, tasks)
    registry["webhook_vault"] = vault
    registry["webhook_worker"] = worker

    tasks.actor(worker.deliver, name=DELIVER_ACTOR)
    tasks.every(SWEEP_ACTOR, settings["fkod.webhooks.sweep_interval_seconds"],
                registry["leader_lock"].wrap(SWEEP_ACTOR, worker.sweep))
