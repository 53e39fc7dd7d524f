"""Next occurrence of an NCRONTAB schedule with seconds, as the Functions timer trigger reads it.

``{second} {minute} {hour} {day} {month} {day-of-week}``; each field is ``*``,
a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of
those. Names of months and days are not supported here (the app's schedule
uses numbers). https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions
"""

from __future__ import annotations

from datetime import datetime, timedelta

# (lowest, highest) value of each field; Sunday is 0 (NCRONTAB also takes 7? no: 0-6).
_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(v) for v in span.split("-", 1))
        else:
            first = int(span)
            last = high if step_text else first
        if not (low <= first <= last <= high) or step < 1:
            raise ValueError(f"{part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


class Schedule:
    """A parsed six-field NCRONTAB expression; ``ValueError`` if it is not one."""

    def __init__(self, expression: str) -> None:
        fields = expression.split()
        if len(fields) != 6:
            raise ValueError(f"{expression!r} is not a six-field NCRONTAB expression (seconds first)")
        self.expression = expression
        self.seconds, self.minutes, self.hours, self.days, self.months, self.weekdays = (
            _field(text, low, high) for text, (low, high) in zip(fields, _RANGES, strict=True)
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (same time zone)."""
        start = moment.replace(microsecond=0) + timedelta(seconds=1)
        day = start.replace(hour=0, minute=0, second=0)
        for _ in range(366 * 5):
            # Python's weekday() is Monday=0; NCRONTAB's is Sunday=0.
            if day.month in self.months and day.day in self.days and (day.weekday() + 1) % 7 in self.weekdays:
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        for second in sorted(self.seconds):
                            candidate = day.replace(hour=hour, minute=minute, second=second)
                            if candidate >= start:
                                return candidate
            day += timedelta(days=1)
        raise ValueError(f"{self.expression!r} never occurs")
