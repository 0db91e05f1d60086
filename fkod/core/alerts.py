"""Partner alerts: quota windows filling up, keys about to expire, unusual traffic.

Each alert is an event of the catalog, delivered to the partner's webhooks
subscribed to it, and a mail to the partner's owners through the mail actor:

* ``key.quota_warning``: a call brought a rate-limit window to 80% (the
  thresholds are ``fkod.alerts.quota_thresholds``); ``key.quota_exhausted``:
  to 100%, or a call was refused by it. The gateway hands every limited
  call's decision to :meth:`PartnerAlerts.observe_quota`, which costs a few
  comparisons below the first threshold.
* ``key.expiring``: an active key's ``expires_at`` is 7 days, then 1 day away
  (``fkod.alerts.expiry_days``); the hourly job ``alerts.key_expiry``.
* ``usage.anomaly``: a partner's last full hour, in the hourly usage rollup,
  is far from the average of the same hour over the previous 7 days, in
  volume or error rate; the hourly job ``alerts.usage_anomaly``. Partners
  under ``fkod.alerts.anomaly_min_requests`` both now and usually are left out.

Each alert is sent once: a row of ``job_states`` named after the alert
(``alert:<kind>:<subject>:<window>``) records it in the same transaction as
the event, and a second attempt finds the row (or fails on its primary key
when two processes race) and sends nothing. Quota alerts count per limit
window and fixed period of its length (the hour or the day of the window),
so a partner hears of a full hourly window at most once an hour.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections import OrderedDict

import sqlalchemy as sa
import sqlalchemy.exc

from fkod.core.db import run_in_transaction, utcnow
from fkod.core.webhooks.catalog import EventType

log = logging.getLogger(__name__)

QUOTA_WARNING = "key.quota_warning"
QUOTA_EXHAUSTED = "key.quota_exhausted"
KEY_EXPIRING = "key.expiring"
USAGE_ANOMALY = "usage.anomaly"

QUOTA_ACTOR = "alerts.quota"
EXPIRY_JOB = "alerts.key_expiry"
ANOMALY_JOB = "alerts.usage_anomaly"
PURGE_AFTER_DAYS = 30
STATE_PREFIX = "alert:"

_TIMESTAMP = {"type": "string", "format": "date-time"}
_KEY = {
    "type": "object",
    "required": ["id", "key_prefix", "livemode"],
    "properties": {
        "id": {"type": "string", "pattern": "^key_[0-9]+$"},
        "key_name": {"type": ["string", "null"]},
        "key_prefix": {"type": "string"},
        "livemode": {"type": "boolean"},
    },
}
QUOTA_SCHEMA = {
    "type": "object",
    "required": ["partner_id", "key", "window", "threshold_percent", "used", "limit"],
    "properties": {
        "partner_id": {"type": "string", "pattern": "^partner_[0-9]+$"},
        "key": _KEY,
        "window": {
            "type": "object",
            "required": ["scope", "seconds"],
            "properties": {
                "scope": {"enum": ["partner", "endpoint", "key", "oauth_user"]},
                "seconds": {"type": "integer"},
                "route": {"type": ["string", "null"]},
            },
        },
        "threshold_percent": {"type": "integer"},
        "used": {"type": "integer"},
        "limit": {"type": "integer"},
        "reset_at": _TIMESTAMP,
    },
}
EXPIRING_SCHEMA = {
    "type": "object",
    "required": ["partner_id", "key", "expires_at", "days_before"],
    "properties": {
        "partner_id": {"type": "string", "pattern": "^partner_[0-9]+$"},
        "key": _KEY,
        "expires_at": _TIMESTAMP,
        "days_before": {"type": "integer"},
    },
}
ANOMALY_SCHEMA = {
    "type": "object",
    "required": ["partner_id", "livemode", "hour", "kinds", "requests", "usual_requests",
                 "error_rate", "usual_error_rate"],
    "properties": {
        "partner_id": {"type": "string", "pattern": "^partner_[0-9]+$"},
        "livemode": {"type": "boolean"},
        "hour": _TIMESTAMP,
        "kinds": {"type": "array", "items": {"enum": ["traffic_spike", "traffic_drop",
                                                       "error_rate"]}},
        "requests": {"type": "integer"},
        "usual_requests": {"type": "number"},
        "error_rate": {"type": "number"},
        "usual_error_rate": {"type": "number"},
    },
}
_SAMPLE_KEY = {"id": "key_34", "key_name": "backend", "key_prefix": "sk_live_AbC1",
               "livemode": True}

EVENT_TYPES = (
    EventType(QUOTA_WARNING,
              "A rate-limit window of the partner reached a warning threshold (80% by "
              "default); sent once per window and period.",
              QUOTA_SCHEMA,
              {"partner_id": "partner_42", "key": _SAMPLE_KEY,
               "window": {"scope": "partner", "seconds": 3600, "route": None},
               "threshold_percent": 80, "used": 800, "limit": 1000,
               "reset_at": "2026-06-05T11:00:00Z"}),
    EventType(QUOTA_EXHAUSTED,
              "A rate-limit window of the partner is full: further calls get 429 until it "
              "frees up; sent once per window and period.",
              QUOTA_SCHEMA,
              {"partner_id": "partner_42", "key": _SAMPLE_KEY,
               "window": {"scope": "partner", "seconds": 3600, "route": None},
               "threshold_percent": 100, "used": 1000, "limit": 1000,
               "reset_at": "2026-06-05T11:00:00Z"}),
    EventType(KEY_EXPIRING,
              "An API key expires soon: 7 days and again 1 day before its expires_at.",
              EXPIRING_SCHEMA,
              {"partner_id": "partner_42", "key": _SAMPLE_KEY,
               "expires_at": "2026-06-12T10:00:00Z", "days_before": 7}),
    EventType(USAGE_ANOMALY,
              "The partner's traffic or error rate in the last hour is far from the same "
              "hour's average over the previous 7 days.",
              ANOMALY_SCHEMA,
              {"partner_id": "partner_42", "livemode": True, "hour": "2026-06-05T10:00:00Z",
               "kinds": ["error_rate"], "requests": 1200, "usual_requests": 1100.0,
               "error_rate": 0.35, "usual_error_rate": 0.02}),
)


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


def _naive(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def state_name(*parts) -> str:
    """The ``job_states`` name of one alert; long subjects are hashed to fit 100 characters."""
    name = STATE_PREFIX + ":".join(str(part) for part in parts)
    if len(name) > 100:
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        name = STATE_PREFIX + str(parts[0]) + ":h:" + digest
    return name


def _window_scope(subject: str) -> tuple[str, str | None]:
    if subject.startswith("key:"):
        return "key", None
    if subject.startswith("oauth:"):
        return "oauth_user", None
    if ":route:" in subject:
        return "endpoint", subject.split(":route:", 1)[1]
    return "partner", None


class PartnerAlerts:
    """Raises the partner alerts of one application."""

    def __init__(self, registry):
        self.registry = registry
        settings = registry.settings
        self.thresholds = sorted({int(value) for value in settings["fkod.alerts.quota_thresholds"]
                                  if 0 < int(value) <= 100})
        self.expiry_days = sorted({int(value) for value in settings["fkod.alerts.expiry_days"]
                                   if int(value) > 0}, reverse=True)
        self.min_requests = settings["fkod.alerts.anomaly_min_requests"]
        self.traffic_factor = settings["fkod.alerts.anomaly_traffic_factor"]
        self.error_points = settings["fkod.alerts.anomaly_error_rate_points"]
        # Alerts this process already handed over, so a hot key does not enqueue a
        # message on every call once past a threshold.
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    # Quota -------------------------------------------------------------------------

    def observe_quota(self, key, checks, decision, now: float | None = None) -> None:
        """Look at one limited call's decision; enqueue an alert at a new threshold."""
        if not self.thresholds or decision is None or decision.unlimited or decision.limit <= 0:
            return
        used = decision.limit if not decision.allowed else decision.limit - decision.remaining
        percent = used * 100 // decision.limit
        crossed = [threshold for threshold in self.thresholds if percent >= threshold]
        if not crossed:
            return
        # The decision describes its tightest window: the check with its limit,
        # the shortest among equals.
        matching = [check for check in checks if check.limit == decision.limit]
        if not matching:
            return
        check = min(matching, key=lambda item: item.window_seconds)
        now = time.time() if now is None else now
        period = int(now // check.window_seconds)
        top = crossed[-1]
        marker = state_name("quota", top, check.subject, check.window_seconds, period)
        with self._lock:
            if marker in self._seen:
                return
            self._seen[marker] = None
            while len(self._seen) > 10_000:
                self._seen.popitem(last=False)
        partner_id = getattr(key, "partner_id", None)
        if partner_id is None:
            return
        self.registry["tasks"].send(QUOTA_ACTOR, {
            "partner_id": partner_id,
            "key_id": getattr(key, "id", None) if getattr(key, "oauth_client_id", None) is None
            else None,
            "livemode": bool(key.livemode),
            "subject": check.subject,
            "window_seconds": check.window_seconds,
            "period": period,
            "crossed": crossed,
            "used": min(used, decision.limit),
            "limit": decision.limit,
            "reset_at": decision.reset_at,
        })

    def send_quota_alert(self, message: dict) -> bool:
        """The actor's work: record the alert once and publish its event; True when sent."""
        from fkod.core.auth.models import ApiKey

        crossed = message["crossed"]
        top = crossed[-1]
        event_type = QUOTA_EXHAUSTED if top >= 100 else QUOTA_WARNING
        scope, route = _window_scope(message["subject"])
        names = [state_name("quota", threshold, message["subject"], message["window_seconds"],
                            message["period"]) for threshold in crossed]

        def data_for(session):
            key = session.get(ApiKey, message["key_id"]) if message["key_id"] else None
            return {
                "partner_id": f"partner_{message['partner_id']}",
                "key": _key_data(key, message["livemode"]),
                "window": {"scope": scope, "seconds": message["window_seconds"],
                           "route": route},
                "threshold_percent": top,
                "used": message["used"],
                "limit": message["limit"],
                "reset_at": _iso(dt.datetime.fromtimestamp(message["reset_at"], dt.UTC)),
            }

        subject = ("F-KOD: rate limit reached" if event_type == QUOTA_EXHAUSTED
                   else f"F-KOD: {top}% of a rate limit used")

        def body(data):
            key = data["key"]
            window = _window_words(data["window"]["seconds"])
            lines = [
                f"Your F-KOD {'live' if key['livemode'] else 'test'} traffic has used "
                f"{data['used']} of {data['limit']} requests allowed per {window}"
                + (f" on {data['window']['route']}" if data["window"]["route"] else "") + ".",
                f"API key: {key['key_prefix'] or '(OAuth application)'}",
                f"The window frees up from {data['reset_at']}.",
            ]
            if event_type == QUOTA_EXHAUSTED:
                lines.append("Further calls get 429 Too Many Requests until then. A higher "
                             "plan or a limit boost raises the limit.")
            return "\n".join(lines) + "\n"

        return self._send_once(names, event_type, message["partner_id"], message["livemode"],
                               data_for, subject, body)

    # Key expiry --------------------------------------------------------------------

    def check_expiring_keys(self, now: dt.datetime | None = None) -> int:
        """Alert every active key whose expiry is within a threshold not yet announced."""
        from fkod.core.auth.models import ApiKey

        if not self.expiry_days:
            return 0
        now = _naive(now or utcnow())
        horizon = now + dt.timedelta(days=self.expiry_days[0])

        def find(session):
            return [(key.id, key.partner_id, key.livemode, key.expires_at) for key in
                    session.scalars(sa.select(ApiKey).where(
                        ApiKey.status == "active", ApiKey.revoked_at.is_(None),
                        ApiKey.expires_at.is_not(None), ApiKey.expires_at > now,
                        ApiKey.expires_at <= horizon).order_by(ApiKey.id))]

        sent = 0
        for key_id, partner_id, livemode, expires_at in run_in_transaction(
                self.registry["db.session_factory"], find):
            left = _naive(expires_at) - now
            crossed = [days for days in self.expiry_days if left <= dt.timedelta(days=days)]
            if not crossed:
                continue
            # The nearest threshold is the one announced; the farther ones are
            # recorded too, so a key created 2 days before it expires gets one mail.
            nearest = crossed[-1]
            names = [state_name("expiring", key_id, days, _iso(expires_at))
                     for days in crossed]

            def data_for(session, key_id=key_id, livemode=livemode, expires_at=expires_at,
                         nearest=nearest, partner_id=partner_id):
                key = session.get(ApiKey, key_id)
                return {"partner_id": f"partner_{partner_id}", "key": _key_data(key, livemode),
                        "expires_at": _iso(expires_at), "days_before": nearest}

            def body(data):
                key = data["key"]
                return (f"Your F-KOD API key {key['key_name'] or ''} ({key['key_prefix']}) "
                        f"expires at {data['expires_at']}.\n"
                        "Create a new key and switch your integration to it before then; "
                        "calls with the old key get 401 afterwards.\n")

            subject = ("F-KOD: an API key expires tomorrow" if nearest <= 1
                       else f"F-KOD: an API key expires in {nearest} days")
            if self._send_once(names, KEY_EXPIRING, partner_id, livemode, data_for, subject,
                               body):
                sent += 1
        return sent

    # Usage anomalies ---------------------------------------------------------------

    def check_anomalies(self, now: dt.datetime | None = None) -> int:
        """Compare each partner's last full hour with the same hour of the previous 7 days."""
        from fkod.core.metering.models import ApiUsageHourly

        now = _naive(now or utcnow())
        hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
        earlier = [hour - dt.timedelta(days=days) for days in range(1, 8)]
        is_error = sa.and_(ApiUsageHourly.status_code >= 400, ApiUsageHourly.status_code != 429)

        def read(session):
            rows = session.execute(
                sa.select(ApiUsageHourly.partner_id, ApiUsageHourly.livemode,
                          ApiUsageHourly.hour,
                          sa.func.sum(ApiUsageHourly.request_count),
                          sa.func.sum(sa.case((is_error, ApiUsageHourly.request_count),
                                              else_=0)))
                .where(ApiUsageHourly.hour.in_([hour, *earlier]),
                       ApiUsageHourly.partner_id.is_not(None))
                .group_by(ApiUsageHourly.partner_id, ApiUsageHourly.livemode,
                          ApiUsageHourly.hour)
            ).all()
            return [(partner, bool(live), _naive(at), int(total or 0), int(errors or 0))
                    for partner, live, at, total, errors in rows]

        totals: dict[tuple[int, bool], dict] = {}
        for partner, live, at, total, errors in run_in_transaction(
                self.registry["db.session_factory"], read):
            entry = totals.setdefault((partner, live), {"now": 0, "now_errors": 0,
                                                        "before": 0, "before_errors": 0})
            if at == hour:
                entry["now"] += total
                entry["now_errors"] += errors
            else:
                entry["before"] += total
                entry["before_errors"] += errors

        sent = 0
        for (partner_id, livemode), entry in sorted(totals.items()):
            finding = self.anomaly(entry["now"], entry["now_errors"], entry["before"],
                                   entry["before_errors"], days=len(earlier))
            if finding is None:
                continue
            names = [state_name("anomaly", partner_id, "live" if livemode else "test",
                                _iso(hour))]
            data = {"partner_id": f"partner_{partner_id}", "livemode": livemode,
                    "hour": _iso(hour), **finding}

            def body(data):
                words = {"traffic_spike": "far more requests than usual",
                         "traffic_drop": "far fewer requests than usual",
                         "error_rate": "a much higher error rate than usual"}
                return (f"Your F-KOD {'live' if data['livemode'] else 'test'} traffic in the "
                        f"hour from {data['hour']} shows "
                        + " and ".join(words[kind] for kind in data["kinds"]) + ".\n"
                        f"Requests: {data['requests']} (usually {data['usual_requests']:.0f}).\n"
                        f"Error rate: {data['error_rate']:.1%} "
                        f"(usually {data['usual_error_rate']:.1%}).\n")

            if self._send_once(names, USAGE_ANOMALY, partner_id, livemode,
                               lambda _session, data=data: data,
                               "F-KOD: unusual API traffic", body):
                sent += 1
        return sent

    def anomaly(self, requests: int, errors: int, before: int, before_errors: int,
                *, days: int = 7) -> dict | None:
        """Return the anomaly of one partner's hour, or None when it looks usual."""
        usual = before / days
        if max(requests, usual) < self.min_requests:
            return None
        kinds = []
        if requests >= max(usual, 1) * self.traffic_factor:
            kinds.append("traffic_spike")
        elif usual >= self.min_requests and requests * self.traffic_factor <= usual:
            kinds.append("traffic_drop")
        rate = errors / requests if requests else 0.0
        usual_rate = before_errors / before if before else 0.0
        if requests >= self.min_requests and (rate - usual_rate) * 100 >= self.error_points:
            kinds.append("error_rate")
        if not kinds:
            return None
        return {"kinds": kinds, "requests": requests, "usual_requests": round(usual, 2),
                "error_rate": round(rate, 4), "usual_error_rate": round(usual_rate, 4)}

    # Sending -----------------------------------------------------------------------

    def _send_once(self, names: list[str], event_type: str, partner_id: int, livemode: bool,
                   data_for, subject: str, body) -> bool:
        """Record ``names``, publish the event and queue the mails, unless names[-1] is known.

        ``names[-1]`` is the alert itself; the others are lower thresholds it covers.
        """
        from fkod.core import mail
        from fkod.core.metering.models import JobState
        from fkod.core.webhooks.outbox import DELIVER_ACTOR, publish_event

        registry = self.registry

        def work(session):
            if session.get(JobState, names[-1]) is not None:
                return None
            for name in names:
                if session.get(JobState, name) is None:
                    session.add(JobState(name=name, cursor={"event_type": event_type}))
            session.flush()
            data = data_for(session)
            _event, deliveries = publish_event(
                session, event_type=event_type, data=data, livemode=livemode,
                partner_ids=[partner_id], request_id=None,
                catalog=registry["plugins"].event_catalog)
            return data, [delivery.id for delivery in deliveries], owner_emails(session,
                                                                              partner_id)

        try:
            result = run_in_transaction(registry["db.session_factory"], work)
        except sqlalchemy.exc.IntegrityError:
            # Another process recorded the same alert first.
            return False
        if result is None:
            return False
        data, delivery_ids, emails = result
        tasks = registry["tasks"]
        for delivery_id in delivery_ids:
            tasks.send(DELIVER_ACTOR, delivery_id)
        text = body(data)
        for address in emails:
            tasks.send(mail.SEND_ACTOR, address, subject, text)
        from fkod.core import metrics

        metrics.PARTNER_ALERTS.labels(event_type).inc()
        log.info("partner alert", extra={"event_type": event_type, "partner_id": partner_id,
                                         "alert": names[-1], "mails": len(emails),
                                         "deliveries": len(delivery_ids)})
        return True

    def purge(self, now: dt.datetime | None = None) -> int:
        """Forget alerts older than 30 days; their windows are long over."""
        from fkod.core.metering.models import JobState

        cutoff = _naive(now or utcnow()) - dt.timedelta(days=PURGE_AFTER_DAYS)

        def work(session):
            return session.execute(sa.delete(JobState).where(
                JobState.name.like(STATE_PREFIX + "%"), JobState.updated_at < cutoff)).rowcount

        return run_in_transaction(self.registry["db.session_factory"], work)


def _window_words(seconds: int) -> str:
    if seconds == 3600:
        return "hour"
    if seconds == 86400:
        return "day"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hours"
    if seconds % 60 == 0:
        return f"{seconds // 60} minutes" if seconds != 60 else "minute"
    return f"{seconds} seconds"


def _key_data(key, livemode: bool) -> dict:
    if key is None:
        return {"id": "key_0", "key_name": None, "key_prefix": "", "livemode": livemode}
    return {"id": f"key_{key.id}", "key_name": key.key_name, "key_prefix": key.key_prefix,
            "livemode": bool(key.livemode)}


def owner_emails(session, partner_id: int) -> list[str]:
    """The addresses of the partner's owners: its owner user and members with the owner role."""
    from fkod.core.auth.models import Partner, PartnerMember, User

    partner = session.get(Partner, partner_id)
    if partner is None or partner.deleted_at is not None:
        return []
    members = sa.select(PartnerMember.user_id).where(PartnerMember.partner_id == partner_id,
                                                     PartnerMember.role == "owner")
    condition = User.id.in_(members)
    if partner.user_id is not None:
        condition = sa.or_(condition, User.id == partner.user_id)
    users = session.scalars(sa.select(User).where(condition, User.status == "active")
                            .order_by(User.id))
    return list(dict.fromkeys(user.email for user in users if user.email))


def includeme(config):
    from fkod.core.scheduler import ScheduledJob, schedule_for

    registry = config.registry
    alerts = PartnerAlerts(registry)
    registry["partner_alerts"] = alerts
    tasks = registry["tasks"]

    def quota_actor(message: dict):
        alerts.send_quota_alert(message)

    def expiry_actor(_argument: str | None = None):
        alerts.check_expiring_keys()
        alerts.purge()

    def anomaly_actor(_argument: str | None = None):
        alerts.check_anomalies()

    tasks.actor(quota_actor, name=QUOTA_ACTOR)
    tasks.actor(expiry_actor, name=EXPIRY_JOB, time_limit_ms=600_000)
    tasks.actor(anomaly_actor, name=ANOMALY_JOB, time_limit_ms=600_000)
    schedule = schedule_for(registry)
    schedule.add(ScheduledJob(EXPIRY_JOB, "5 * * * *", EXPIRY_JOB,
                              "Alert partners whose API keys expire within 7 days, then 1 day "
                              "(key.expiring); forget alerts older than 30 days."))
    # The usage rollup of the ended hour runs a few minutes after it.
    schedule.add(ScheduledJob(ANOMALY_JOB, "20 * * * *", ANOMALY_JOB,
                              "Alert partners whose last hour's traffic or error rate is far "
                              "from the same hour's average of the previous 7 days "
                              "(usage.anomaly)."))

