"""Every log record of the test session, for the check that no secret reaches a log."""

from __future__ import annotations

import logging


class _Capture(logging.Handler):
    """Keeps every log record of the session, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.texts.append(self.format(record))
        except Exception:
            self.texts.append(str(record.msg))


SESSION_LOG = _Capture()
