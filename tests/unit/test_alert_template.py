"""infra/app/alerts.bicep: the staleness and credential-expiry alerts match the log lines the app writes.

Parsed with the current pycep-parser (as tests/unit/test_templates.py does). Each alert's KQL
predicate is applied to a line the app really logs, so renaming the line breaks this test.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from testkit.fake_storage import FakeContainer
from testkit.sync_fakes import PagedGraph, make, tenant_pages
from testkit.templates import parse

from graphusers import expiry

INFRA = Path(__file__).resolve().parents[2] / "infra"
ALERTS = INFRA / "app" / "alerts.bicep"
RULES = "Microsoft.Insights/scheduledQueryRules"


def rules(text: str) -> dict[str, dict[str, Any]]:
    return {name: r["config"]["properties"] for name, r in parse(text)["resources"].items() if r["type"] == RULES}


def kql_matches(query: str, message: str, severity: int) -> bool:
    """Apply the ``where`` clause of a one-table traces query (startswith / has / severityLevel ==) to a log line."""
    where = query.split("| where", 1)[1]
    for clause in re.split(r"\band\b", where):
        clause = clause.strip()
        if m := re.fullmatch(r'message startswith "(.*)"', clause):
            ok = message.startswith(m.group(1))
        elif m := re.fullmatch(r'message has "(.*)"', clause):
            ok = m.group(1).lower() in message.lower()
        elif m := re.fullmatch(r"severityLevel == (\d)", clause):
            ok = severity == int(m.group(1))
        else:
            raise AssertionError(f"clause this test cannot evaluate: {clause}")
        if not ok:
            return False
    return True


def app_insights_severity(record: logging.LogRecord) -> int:
    # Application Insights severityLevel: 0 verbose, 1 information, 2 warning, 3 error, 4 critical.
    return {logging.DEBUG: 0, logging.INFO: 1, logging.WARNING: 2, logging.ERROR: 3}.get(record.levelno, 4)


def test_staleness_alert_counts_the_sync_success_line(caplog: pytest.LogCaptureFixture) -> None:
    """The staleness rule counts the line a successful sync logs, fires below one, and not a failure's line."""
    rule = rules(ALERTS.read_text())["syncStale"]
    criteria = rule["criteria"]["allOf"][0]
    assert (criteria["operator"], criteria["threshold"], criteria["timeAggregation"]) == ("LessThan", 1, "Count")
    assert rule["windowSize"] == "staleAfter" and rule["scopes"]
    graph, container = PagedGraph(tenant_pages(5, 5)), FakeContainer()
    with caplog.at_level(logging.INFO, logger="graphusers.sync"):
        make(graph, container).run()
    hits = [r for r in caplog.records if kql_matches(criteria["query"], r.getMessage(), app_insights_severity(r))]
    assert len(hits) == 1 and " succeeded: mode=full" in hits[0].getMessage()
    assert not kql_matches(criteria["query"], "Sync abc failed after 3 pages (UnavailableError)", 3)


def test_expiry_alert_counts_the_expiry_warning(caplog: pytest.LogCaptureFixture) -> None:
    """The expiry rule matches the daily WARNING and nothing the app logs at INFO."""
    from datetime import UTC, datetime, timedelta

    criteria = rules(ALERTS.read_text())["credentialExpiry"]["criteria"]["allOf"][0]
    assert (criteria["operator"], criteria["threshold"]) == ("GreaterThan", 0)
    expiry.reset()
    now = 1_800_000_000.0
    expiry.note("secret", datetime.fromtimestamp(now, UTC) + timedelta(days=12))
    with caplog.at_level(logging.INFO, logger="graphusers.expiry"):
        assert expiry.warn_if_due(lambda: now) and not expiry.warn_if_due(lambda: now + 3600)
        assert expiry.warn_if_due(lambda: now + 86400)  # the next day
    expiry.reset()
    hits = [r for r in caplog.records if kql_matches(criteria["query"], r.getMessage(), app_insights_severity(r))]
    assert len(hits) == 2 and "in 12 days" in hits[0].getMessage() and "in 11 days" in hits[1].getMessage()


def test_no_warning_outside_thirty_days_or_without_an_expiry() -> None:
    """A credential expiring in 31 days, or one with no expiry seen, logs nothing."""
    from datetime import UTC, datetime, timedelta

    expiry.reset()
    now = 1_800_000_000.0
    expiry.note("secret", datetime.fromtimestamp(now, UTC) + timedelta(days=31))
    assert not expiry.warn_if_due(lambda: now)
    expiry.note("managed-identity-federation", None)
    assert not expiry.warn_if_due(lambda: now) and expiry.current() == {"mode": "managed-identity-federation", "expiresOn": None}
    expiry.reset()


def test_action_group_is_optional_and_wired_to_both_rules() -> None:
    """The e-mail action group exists only with an address, and both rules notify it through one variable."""
    model = parse(ALERTS.read_text())
    group = model["resources"]["actionGroup"]
    assert "condition" in group["config"] and "alertEmail" in str(group["config"]["condition"])
    assert model["parameters"]["alertEmail"]["default"] == ""
    for rule in rules(ALERTS.read_text()).values():
        assert rule["actions"] == "actions"
    assert "actionGroup.id" in ALERTS.read_text()


def test_main_deploys_the_alerts_with_the_email_parameter() -> None:
    """main.bicep deploys the alerts module and passes alertEmail and the staleness window through."""
    main = parse((INFRA / "main.bicep").read_text())
    module = main["modules"]["alerts"]
    params = module["config"]["params"]
    assert module["detail"]["path"] == "app/alerts.bicep"
    assert params["alertEmail"] == "alertEmail" and params["staleAfter"] == "syncStaleAfter"
    assert main["parameters"]["alertEmail"]["default"] == ""


def test_removing_the_staleness_rule_fails() -> None:
    """A template without the staleness rule fails the rule lookup this file relies on."""
    text = ALERTS.read_text()
    start = text.index("// Fires when no")
    end = text.index("// Fires on the daily")
    assert "syncStale" not in rules(text[:start] + text[end:])
