"""The timer schedule ./scripts/serve follows: NCRONTAB with seconds, as the Functions timer reads it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devtools.ncrontab import Schedule

T0 = datetime(2026, 12, 1, 4, 29, 59, 500000, tzinfo=UTC)  # a Tuesday


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */30 * * * *", T0, datetime(2026, 12, 1, 4, 30, 0, tzinfo=UTC)),
        ("0 */30 * * * *", datetime(2026, 12, 1, 4, 30, 0, tzinfo=UTC), datetime(2026, 12, 1, 5, 0, 0, tzinfo=UTC)),
        ("*/15 * * * * *", T0, datetime(2026, 12, 1, 4, 30, 0, tzinfo=UTC)),
        ("0 0 9-17/4 * * *", T0, datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)),
        ("0 0 2 * * *", T0, datetime(2026, 12, 2, 2, 0, 0, tzinfo=UTC)),
        ("0 0 0 * * 0", T0, datetime(2026, 12, 6, 0, 0, 0, tzinfo=UTC)),  # Sunday is 0
        ("0 0 0 1 1 *", T0, datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC)),
        ("5,10 0 5 * * *", T0, datetime(2026, 12, 1, 5, 0, 5, tzinfo=UTC)),
    ],
)
def test_next_occurrence(expression: str, after: datetime, expected: datetime) -> None:
    """The first matching second strictly after the given moment."""
    assert Schedule(expression).next_after(after) == expected


@pytest.mark.parametrize("expression", ["0 */30 * * *", "61 * * * * *", "0 0 0 31 2 *", "0 0 25 * * *", "x * * * * *"])
def test_what_is_not_a_schedule(expression: str) -> None:
    """Five fields, out-of-range values, dates that never come, and garbage are refused."""
    with pytest.raises(ValueError):
        Schedule(expression).next_after(T0)
