"""Platform events reaching installs through the owning plugin's fkod_integration_event hook.

Events come from the learning API with a live key of the publishing partner,
whose tenancy the customer joined by installing.
"""

from __future__ import annotations

import time

import pytest

from fkod.core.db import run_in_transaction
from fkod.core.testing import TestClient, auth_header
from fkod.marketplace.reactions import concerned_user_ids
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
