"""Slack messages for F-KOD events, in the incoming-webhook format.

Each message has ``text`` (the notification and fallback line) and ``blocks``:
a header, a section in Slack's mrkdwn and a context line with the event id.
Slack limits a header to 150 characters and a section to 3000, so longer
values are cut.
"""

from __future__ import annotations

MAX_HEADER_CHARS = 150
MAX_SECTION_CHARS = 3000

# The event types the Slack integration can post, with the header each one gets.
# Each concerns one user, which is how the platform routes an event to that
# user's installs; course.created concerns no user, so it would reach none.
HEADERS = {
    "course.completed": "Course completed",
    "user.created": "New user",
    "user.updated": "User updated",
    "mentor.matched": "Mentor matched",
}
EVENT_TYPES = tuple(HEADERS)


def escape(value: object) -> str:
    """Escape the three characters that Slack's mrkdwn reserves (``&``, ``<``, ``>``)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(event_type: str, data: dict) -> str:
    """Return one mrkdwn sentence about the event; values are escaped."""
    if event_type == "course.completed":
        course = data.get("course") or {}
        return (f"{escape(data.get('user_id', 'A user'))} completed "
                f"*{escape(course.get('title', 'a course'))}*"
                + (f" ({escape(course['level'])})." if course.get("level") else "."))
    if event_type == "user.created":
        name = escape(data.get("name") or "A user")
        return f"{name} ({escape(data.get('id', 'unknown id'))}) joined."
    if event_type == "user.updated":
        name = escape(data.get("name") or data.get("id", "A user"))
        changed = ", ".join(escape(field) for field in data.get("changed_fields") or ())
        return f"{name} changed {changed}." if changed else f"{name} changed their profile."
    if event_type == "mentor.matched":
        mentor = data.get("mentor") or {}
        return (f"{escape(data.get('user_id', 'A user'))} was matched with mentor "
                f"*{escape(mentor.get('name', 'unknown'))}*.")
    return f"An event of type {escape(event_type)} happened."


def build_message(event: dict) -> dict:
    """Return the JSON body that posts ``event`` (a platform event envelope) to Slack."""
    event_type = event["type"]
    header = HEADERS.get(event_type, event_type)
    if not event.get("livemode", False):
        header = f"[test] {header}"
    sentence = _describe(event_type, event.get("data") or {})
    return {
        # Slack shows ``text`` in notifications and where blocks cannot be shown.
        "text": _cut(f"{header}: {sentence}", MAX_SECTION_CHARS),
        "blocks": [
            {"type": "header",
             "text": {"type": "plain_text", "text": _cut(header, MAX_HEADER_CHARS)}},
            {"type": "section",
             "text": {"type": "mrkdwn", "text": _cut(sentence, MAX_SECTION_CHARS)}},
            {"type": "context",
             "elements": [{"type": "mrkdwn",
                           "text": f"F-KOD event {escape(event.get('id', ''))} ({event_type})"}]},
        ],
    }
