"""Platform events reaching installs through the owning plugin's fkod_integration_event hook.

Events come from the learning API with a live key of the publishing partner,
whose tenancy the customer joined by installing.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa

from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header
from fkod.core.webhooks.models import Event
from fkod.core.webhooks.outbox import publish_event
from fkod.marketplace.models import IntegrationReaction
from fkod.marketplace.reactions import (
    LOST_CALL_ERROR,
    NOT_TAKING_EVENTS_ERROR,
    concerned_user_ids,
)
from fkod.plugins.learning.models import Course
from tests.conftest import STACK
from tests.functional.test_marketplace_installs import (
    GOOD_CONFIG,
    PLUGIN,
    add_integration,
    hook_calls,
    install,
    install_test_plugin,
    install_url,
    make_customer,
    make_publisher,
)

# Long enough for a task to pass through Redis on the production stack.
WAIT_SECONDS = 30
# How long a test watches for hook calls that must not happen.
QUIET_SECONDS = 1.5


@pytest.fixture
def calls_file(plugin_path, tmp_path):
    return install_test_plugin(plugin_path, tmp_path)


@pytest.fixture
def hook_app(calls_file, app_factory):
    return app_factory()


@pytest.fixture
def hook_client(hook_app):
    return TestClient(hook_app)


@pytest.fixture
def publisher(hook_client):
    return make_publisher(hook_client)


@pytest.fixture
def live_key(hook_client, publisher) -> dict:
    key = hook_client.create_key(publisher.headers["Authorization"].split(" ", 1)[1],
                                 scopes=("courses:write",), mode="live")["key"]
    return auth_header(key)


@pytest.fixture
def course_id(hook_app) -> str:
    def work(session):
        course = Course(title="Intro to SQL", livemode=True)
        session.add(course)
        session.flush()
        return course.id

    return f"course_{run_in_transaction(hook_app.registry['db.session_factory'], work)}"


def complete_course(client, live_key, course_id: str, user_id: str) -> None:
    client.web.post_json(f"/api/v1/courses/{course_id}/complete", {"user_id": user_id},
                         headers=live_key, status=201)


def wait_for_calls(calls_file, hook: str, count: int) -> list[dict]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        calls = hook_calls(calls_file, hook)
        if len(calls) >= count:
            return calls
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} {hook} calls, got {len(calls)}")
        time.sleep(0.05)


def stored_reactions(app, install_id: str) -> list[IntegrationReaction]:
    number = parse_id("inst", install_id)

    def work(session):
        rows = session.scalars(sa.select(IntegrationReaction)
                               .where(IntegrationReaction.install_id == number)
                               .order_by(IntegrationReaction.id)).all()
        session.expunge_all()
        return rows

    return run_in_transaction(app.registry["db.session_factory"], work)


def wait_for_reaction(app, install_id: str, status: str) -> IntegrationReaction:
    """Return the install's only reaction once it has ``status``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        rows = stored_reactions(app, install_id)
        if len(rows) == 1 and rows[0].status == status:
            return rows[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"expected one {status} reaction, got "
                                 f"{[(row.status, row.attempts) for row in rows]}")
        time.sleep(0.05)


def publish_without_enqueue(app, user_id: str, *, store: bool = True) -> int:
    """Write a course.completed event and, with ``store``, its reactions, but enqueue nothing.

    This is what a request leaves behind when the broker loses its messages
    after the commit. Returns the event's row id.
    """
    reactor = app.registry["integration_reactor"]

    def work(session):
        event, _deliveries = publish_event(
            session, event_type="course.completed",
            data={"user_id": user_id, "course_id": "course_1"}, livemode=True,
            partner_ids=[], request_id=None)
        if store:
            reactor.store_reactions(session, event)
        return event.id

    return run_in_transaction(app.registry["db.session_factory"], work)


def update_reaction(app, install_id: str, **values) -> None:
    number = parse_id("inst", install_id)
    run_in_transaction(app.registry["db.session_factory"], lambda session: session.execute(
        sa.update(IntegrationReaction).where(IntegrationReaction.install_id == number)
        .values(**values)))


def settle(client) -> None:
    """Let queued tasks finish, so a missing hook call is really missing."""
    client.drain_tasks()
    if STACK == "production":
        time.sleep(QUIET_SECONDS)


def test_event_reaches_matching_install_only(hook_client, hook_app, publisher, live_key,
                                             course_id, calls_file):
    courses = add_integration(hook_app, publisher.partner_id, event_types=("course.*",))
    mentors = add_integration(hook_app, publisher.partner_id, event_types=("mentor.matched",))
    no_plugin = add_integration(hook_app, publisher.partner_id, plugin_name=None,
                                event_types=("course.completed",))
    learner = make_customer(hook_client)
    bystander = make_customer(hook_client)
    mine = install(hook_client, learner, courses, GOOD_CONFIG).json["id"]
    install(hook_client, learner, mentors, GOOD_CONFIG)
    install(hook_client, learner, no_plugin, GOOD_CONFIG)
    install(hook_client, bystander, courses, GOOD_CONFIG)

    complete_course(hook_client, live_key, course_id, learner.user_id)
    calls = wait_for_calls(calls_file, "event", 1)
    settle(hook_client)
    calls = hook_calls(calls_file, "event")
    assert len(calls) == 1
    assert calls[0]["install_id"] == mine
    assert calls[0]["user_id"] == learner.user_id
    assert calls[0]["event_type"] == "course.completed"
    assert calls[0]["event_id"].startswith("evt_")
    assert calls[0]["livemode"] is True
    assert calls[0]["data"]["user_id"] == learner.user_id


def test_uninstalled_install_not_reached(hook_client, hook_app, publisher, live_key, course_id,
                                         calls_file):
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    install(hook_client, learner, integration, GOOD_CONFIG)
    complete_course(hook_client, live_key, course_id, learner.user_id)
    wait_for_calls(calls_file, "event", 1)

    # After the uninstall the partner loses the learner from its tenancy, so
    # the learning API itself no longer finds the user.
    hook_client.web.delete(install_url(integration), headers=learner.headers, status=204)
    hook_client.web.post_json(f"/api/v1/courses/{course_id}/complete",
                              {"user_id": learner.user_id}, headers=live_key, status=404)
    settle(hook_client)
    assert len(hook_calls(calls_file, "event")) == 1


def test_disabled_plugin_hook_not_run(hook_client, hook_app, publisher, live_key, course_id,
                                      calls_file):
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    install(hook_client, learner, integration, GOOD_CONFIG)
    host = hook_app.registry["plugins"]
    run_in_transaction(hook_app.registry["db.session_factory"],
                       lambda session: host.set_enabled(session, PLUGIN, False))

    complete_course(hook_client, live_key, course_id, learner.user_id)
    settle(hook_client)
    assert hook_calls(calls_file, "event") == []


def test_failing_hook_retried(hook_client, hook_app, publisher, live_key, course_id,
                              calls_file):
    # The backoff between retries is the reactor's setting; zero keeps the test fast.
    hook_app.registry["integration_reactor"].retry_delay_seconds = 0
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    install(hook_client, learner, integration, {**GOOD_CONFIG, "fail_times": 2})

    complete_course(hook_client, live_key, course_id, learner.user_id)
    calls = wait_for_calls(calls_file, "event", 1)
    assert len(hook_calls(calls_file, "event_failed")) == 2
    assert calls[0]["event_type"] == "course.completed"


def test_install_event_not_sent_to_hook(hook_client, hook_app, publisher, calls_file):
    integration = add_integration(hook_app, publisher.partner_id,
                                  event_types=("integration.*", "*"))
    learner = make_customer(hook_client)
    install(hook_client, learner, integration, GOOD_CONFIG)
    settle(hook_client)
    assert len(hook_calls(calls_file, "installed")) == 1
    assert hook_calls(calls_file, "event") == []


@pytest.mark.parametrize("event_type, data, expected", [
    ("course.completed", {"user_id": "user_7"}, {7}),
    ("mentor.matched", {"id": "match_3", "user_id": "user_8"}, {8}),
    ("user.updated", {"id": "user_9"}, {9}),
    ("integration.installed", {"user_id": "user_7"}, set()),
    ("partner.updated", {"id": "partner_1"}, set()),
    ("course.completed", {"user_id": "course_1"}, set()),
    ("course.completed", None, set()),
])
def test_concerned_users(event_type, data, expected):
    assert concerned_user_ids(event_type, data) == expected


# Stored reactions ------------------------------------------------------------------------


def test_reaction_stored_with_event(hook_client, hook_app, publisher, live_key, course_id,
                                    calls_file):
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, GOOD_CONFIG).json["id"]

    complete_course(hook_client, live_key, course_id, learner.user_id)
    calls = wait_for_calls(calls_file, "event", 1)
    row = wait_for_reaction(hook_app, mine, "succeeded")
    assert row.attempts == 1
    assert row.locked_until is None
    assert row.completed_at is not None
    assert row.last_error is None

    def event_public_id(session):
        return session.scalar(sa.text("SELECT public_id FROM events WHERE id = :id"),
                              {"id": row.event_id})

    assert run_in_transaction(hook_app.registry["db.session_factory"],
                              event_public_id) == calls[0]["event_id"]


def test_lost_enqueue_delivered_by_sweeper(hook_client, hook_app, publisher, calls_file):
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, GOOD_CONFIG).json["id"]

    publish_without_enqueue(hook_app, learner.user_id)
    settle(hook_client)
    assert hook_calls(calls_file, "event") == []
    assert [row.status for row in stored_reactions(hook_app, mine)] == ["pending"]

    assert hook_app.registry["integration_reactor"].sweep(grace_seconds=0) == 1
    calls = wait_for_calls(calls_file, "event", 1)
    assert calls[0]["install_id"] == mine
    assert wait_for_reaction(hook_app, mine, "succeeded").attempts == 1


def test_sweeper_skips_reaction_within_grace(hook_client, hook_app, publisher, calls_file):
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    install(hook_client, learner, integration, GOOD_CONFIG)

    publish_without_enqueue(hook_app, learner.user_id)
    # A reaction younger than the grace period is left to its own message.
    assert hook_app.registry["integration_reactor"].sweep(grace_seconds=3600) == 0


def test_expired_lock_retried_by_sweeper(hook_client, hook_app, publisher, calls_file):
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, GOOD_CONFIG).json["id"]
    publish_without_enqueue(hook_app, learner.user_id)
    # A worker claimed the reaction and died before recording the outcome.
    update_reaction(hook_app, mine, status="running", attempts=1,
                    locked_until=utcnow() - dt.timedelta(seconds=1))

    assert hook_app.registry["integration_reactor"].sweep(grace_seconds=0) == 1
    wait_for_calls(calls_file, "event", 1)
    row = wait_for_reaction(hook_app, mine, "succeeded")
    assert row.attempts == 2
    assert row.locked_until is None


def test_expired_lock_on_last_attempt_fails(hook_client, hook_app, publisher, calls_file):
    reactor = hook_app.registry["integration_reactor"]
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, GOOD_CONFIG).json["id"]
    publish_without_enqueue(hook_app, learner.user_id)
    update_reaction(hook_app, mine, status="running", attempts=reactor.max_attempts,
                    locked_until=utcnow() - dt.timedelta(seconds=1))

    assert reactor.sweep(grace_seconds=0) == 0
    row = stored_reactions(hook_app, mine)[0]
    assert row.status == "failed"
    assert row.last_error == LOST_CALL_ERROR
    assert row.completed_at is not None
    settle(hook_client)
    assert hook_calls(calls_file, "event") == []


def test_live_lock_left_alone(hook_client, hook_app, publisher, calls_file):
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, GOOD_CONFIG).json["id"]
    publish_without_enqueue(hook_app, learner.user_id)
    update_reaction(hook_app, mine, status="running", attempts=1,
                    locked_until=utcnow() + dt.timedelta(seconds=600))

    assert hook_app.registry["integration_reactor"].sweep(grace_seconds=0) == 0
    assert stored_reactions(hook_app, mine)[0].status == "running"


def test_failing_hook_fails_after_limit(hook_client, hook_app, publisher, live_key, course_id,
                                        calls_file):
    reactor = hook_app.registry["integration_reactor"]
    reactor.retry_delay_seconds = 0
    reactor.max_attempts = 3
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, {**GOOD_CONFIG, "fail_times": 10}
                   ).json["id"]

    complete_course(hook_client, live_key, course_id, learner.user_id)
    wait_for_calls(calls_file, "event_failed", 3)
    row = wait_for_reaction(hook_app, mine, "failed")
    assert row.attempts == 3
    assert row.last_error == "RuntimeError: receiver down"
    assert row.completed_at is not None

    assert reactor.sweep(grace_seconds=0) == 0
    settle(hook_client)
    assert len(hook_calls(calls_file, "event_failed")) == 3
    assert hook_calls(calls_file, "event") == []


def test_failed_call_waits_for_backoff(hook_client, hook_app, publisher, calls_file):
    reactor = hook_app.registry["integration_reactor"]
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, {**GOOD_CONFIG, "fail_times": 1}
                   ).json["id"]
    publish_without_enqueue(hook_app, learner.user_id)

    reactor.call(stored_reactions(hook_app, mine)[0].id)
    row = stored_reactions(hook_app, mine)[0]
    assert row.status == "pending"
    assert row.attempts == 1
    # The first retry waits exactly retry_delay_seconds, less the few seconds this test takes.
    assert row.next_attempt_at > utcnow() + dt.timedelta(seconds=reactor.retry_delay_seconds - 5)
    # Not due yet, so neither the sweeper nor a stray message calls the hook again.
    assert reactor.sweep(grace_seconds=0) == 0
    reactor.call(row.id)
    assert len(hook_calls(calls_file, "event_failed")) == 1
    assert hook_calls(calls_file, "event") == []


def test_no_duplicate_reactions(hook_client, hook_app, publisher, live_key, course_id,
                                calls_file):
    reactor = hook_app.registry["integration_reactor"]
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, GOOD_CONFIG).json["id"]
    complete_course(hook_client, live_key, course_id, learner.user_id)
    wait_for_calls(calls_file, "event", 1)
    event_id = wait_for_reaction(hook_app, mine, "succeeded").event_id

    def fan_out_again(session):
        event = session.get(Event, event_id)
        return reactor.store_reactions(session, event)

    assert run_in_transaction(hook_app.registry["db.session_factory"], fan_out_again) == []
    reactor.react(event_id)
    assert reactor.sweep(grace_seconds=0) == 0
    assert reactor.sweep(grace_seconds=0) == 0
    settle(hook_client)
    assert len(stored_reactions(hook_app, mine)) == 1
    assert len(hook_calls(calls_file, "event")) == 1


def test_sweeping_twice_calls_hook_once(hook_client, hook_app, publisher, calls_file):
    reactor = hook_app.registry["integration_reactor"]
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, GOOD_CONFIG).json["id"]
    publish_without_enqueue(hook_app, learner.user_id)

    # Both sweeps may enqueue the pending reaction, but only one message claims it.
    first = reactor.sweep(grace_seconds=0)
    second = reactor.sweep(grace_seconds=0)
    assert first == 1
    assert second in (0, 1)
    wait_for_calls(calls_file, "event", 1)
    wait_for_reaction(hook_app, mine, "succeeded")
    settle(hook_client)
    assert len(hook_calls(calls_file, "event")) == 1


def test_message_of_former_actor_stores_reaction(hook_client, hook_app, publisher,
                                                calls_file):
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, GOOD_CONFIG).json["id"]
    event_id = publish_without_enqueue(hook_app, learner.user_id, store=False)
    assert stored_reactions(hook_app, mine) == []

    hook_app.registry["integration_reactor"].call_legacy(event_id, parse_id("inst", mine), 3)
    wait_for_calls(calls_file, "event", 1)
    assert wait_for_reaction(hook_app, mine, "succeeded").attempts == 1


def test_disabled_plugin_reaction_not_run(hook_client, hook_app, publisher, calls_file):
    integration = add_integration(hook_app, publisher.partner_id)
    learner = make_customer(hook_client)
    mine = install(hook_client, learner, integration, GOOD_CONFIG).json["id"]
    publish_without_enqueue(hook_app, learner.user_id)
    host = hook_app.registry["plugins"]
    run_in_transaction(hook_app.registry["db.session_factory"],
                       lambda session: host.set_enabled(session, PLUGIN, False))

    assert hook_app.registry["integration_reactor"].sweep(grace_seconds=0) == 1
    row = wait_for_reaction(hook_app, mine, "failed")
    assert row.last_error == NOT_TAKING_EVENTS_ERROR
    assert row.attempts == 0
    settle(hook_client)
    assert hook_calls(calls_file, "event") == []
