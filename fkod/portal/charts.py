"""Chart data for the portal's pages, built from the same report functions as the JSON API.

A page renders each :class:`Chart` with the ``chart`` macro of ``charts.html``.
The macro writes a canvas and the chart's data in a ``<script type="application/json">``
element, which ``static/charts.js`` draws with the vendored Chart.js 4.6.2. A table of
the same numbers follows, for screen readers and browsers without JavaScript.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import marshmallow
from pyramid.httpexceptions import HTTPBadRequest

from fkod.core.db import utcnow
from fkod.core.metering.histogram import BUCKET_KEYS, INFINITE_BUCKET
from fkod.core.metering.report import UsageSummary, key_usage_summary
from fkod.partners import dashboard as analytics_service
from fkod.partners.usage_views import DEFAULT_DAYS as KEY_USAGE_DAYS


@dataclasses.dataclass(frozen=True)
class Series:
    """One line or set of bars: a label and one value per chart label."""

    label: str
    values: list


@dataclasses.dataclass(frozen=True)
class Chart:
    """A chart over labels (days, months or latency buckets) with one or more series."""

    name: str
    title: str
    kind: str
    label_heading: str
    labels: list[str]
    series: list[Series]
    unit: str = ""

    @property
    def element_id(self) -> str:
        return f"chart-{self.name}"

    def data(self) -> dict:
        """Return what ``charts.js`` draws, ready for the ``tojson`` filter."""
        return {
            "kind": self.kind,
            "title": self.title,
            "unit": self.unit,
            "labels": self.labels,
            "series": [{"label": series.label, "values": [_plain(value)
                                                          for value in series.values]}
                       for series in self.series],
        }

    def rows(self) -> list[tuple[str, list]]:
        """Return the table rows: each label with its value in every series."""
        return [(label, [series.values[index] for series in self.series])
                for index, label in enumerate(self.labels)]

    @property
    def empty(self) -> bool:
        return not any(value for series in self.series for value in series.values)


def _plain(value):
    # JSON has no decimal type; money is drawn as a float and shown exactly in the table.
    return float(value) if isinstance(value, Decimal) else value


def _label(day: dt.date, granularity: str) -> str:
    return day.strftime("%Y-%m") if granularity == "month" else day.isoformat()


def analytics_charts(session, partner_id: int, *, mode: str, granularity: str,
                     start: dt.date, end: dt.date, metrics: tuple[str, ...]) -> list[Chart]:
    """Return the charts of the metrics of ``GET /api/partners/analytics`` for the same query.

    Calls, errors and revenue get a chart each. Installs and uninstalls share one.
    """
    result = analytics_service.analytics(session, partner_id, mode=mode,
                                         granularity=granularity, start=start, end=end,
                                         metrics=metrics)
    series = result["series"]
    heading = "Month" if granularity == "month" else "Day (UTC)"

    def labels(points):
        return [_label(point["period"], granularity) for point in points]

    charts = []
    if "calls" in series:
        charts.append(Chart("calls", f"Calls per {granularity} ({mode} mode)", "bar", heading,
                            labels(series["calls"]),
                            [Series("Calls", [point["value"] for point in series["calls"]])],
                            unit="calls"))
    if "errors" in series:
        charts.append(Chart("errors", f"Errors per {granularity} ({mode} mode)", "bar",
                            heading, labels(series["errors"]),
                            [Series("Errors (status 400 or more)",
                                    [point["value"] for point in series["errors"]])],
                            unit="calls"))
    install_series = [Series(title, [point["value"] for point in series[metric]])
                      for metric, title in (("installs", "Installs"),
                                            ("uninstalls", "Uninstalls"))
                      if metric in series]
    if install_series:
        first = series["installs"] if "installs" in series else series["uninstalls"]
        charts.append(Chart("installs", f"Installs per {granularity}", "bar", heading,
                            labels(first), install_series, unit="installs"))
    if "revenue" in series:
        charts.append(revenue_chart(
            [(_label(point["period"], granularity), point["gross"], point["partner_share"])
             for point in series["revenue"]],
            result["currency"], heading))
    return charts


def revenue_chart(periods: list[tuple[str, Decimal, Decimal]], currency: str,
                  heading: str = "Month") -> Chart:
    """Return a chart of gross revenue and the partner's share, one bar pair per period."""
    return Chart("revenue", f"Revenue per period ({currency})", "bar", heading,
                 [label for label, _gross, _share in periods],
                 [Series("Gross", [gross for _label, gross, _share in periods]),
                  Series("Your share", [share for _label, _gross, share in periods])],
                 unit=currency)


def daily_usage_chart(name: str, title: str, summary: UsageSummary) -> Chart:
    """Return calls and errors per day of a usage summary, such as one API key's."""
    days = summary.by_day
    return Chart(name, title, "bar", "Day (UTC)", [day.day.isoformat() for day in days],
                 [Series("Calls", [day.request_count for day in days]),
                  Series("Errors (status 400 or more)", [day.error_count for day in days])],
                 unit="calls")


def latency_chart(summary: UsageSummary) -> Chart:
    """Return the number of calls per latency bucket of a usage summary.

    The report keeps one latency histogram per summary, not one per day, so this
    chart shows the distribution. The summary's p50 and p95 are estimates from it.
    """
    histogram = summary.latency_histogram
    labels = [f"over {BUCKET_KEYS[-2]} ms" if key == INFINITE_BUCKET else f"up to {key} ms"
              for key in BUCKET_KEYS]
    return Chart("latency", f"Response time of {summary.mode} calls", "bar", "Response time",
                 labels, [Series("Calls", [histogram.get(key, 0) for key in BUCKET_KEYS])],
                 unit="calls")


def load_query(request, schema) -> dict:
    """Load the query string with an API query schema; raise a 400 page when it is invalid.

    Only the parameters the schema declares are passed, so a link that carries
    another page's parameters still works.
    """
    names = {field.data_key or name for name, field in schema.fields.items()}
    data = {name: request.GET[name] for name in names if name in request.GET}
    try:
        return schema.load(data)
    except marshmallow.ValidationError as error:
        problems = "; ".join(f"{name}: {' '.join(str(text) for text in messages)}"
                             for name, messages in sorted(error.messages.items()))
        raise HTTPBadRequest(f"Invalid filter ({problems}). Correct it and try again.") \
            from None


def recent_usage_charts(request, partner_id: int, mode: str) -> list[Chart]:
    """Return the calls and errors charts of the last 30 days, as the analytics default."""
    start, end = analytics_service.resolve_range("day", None, None, utcnow().date())
    return analytics_charts(request.dbsession, partner_id, mode=mode, granularity="day",
                            start=start, end=end, metrics=("calls", "errors"))


def key_usage_chart(session, key) -> Chart:
    """Return one API key's calls and errors per day of the last 30 days, in the key's mode.

    The numbers are those of ``GET /api/partners/api-keys/{id}/usage`` with its default days.
    """
    until = utcnow()
    since = dt.datetime.combine(until.date() - dt.timedelta(days=KEY_USAGE_DAYS - 1), dt.time())
    summary = key_usage_summary(session, key.id, key.livemode, since, until)
    return daily_usage_chart("key-usage", f"Calls per day with {key.key_name}", summary)
