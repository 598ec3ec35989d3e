"""Expiry warnings: a line once a day while the serving certificate expires within 30 days
(warning) or 7 days (error), and a line of its own while the self-signed default serves.

Owns the thresholds, the wording and the once-a-day rule; `expiry_notice` is pure (a snapshot and
a clock in). It knows nothing of the event loop: the caller checks at start, on each swap and
every `check_every`. The admin page words its banner the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from proxy.certstore.store import Snapshot

log = logging.getLogger("proxy.certstore.expiry")

WARN_WITHIN = timedelta(days=30)
ERROR_WITHIN = timedelta(days=7)
REPEAT_EVERY = timedelta(days=1)
# How often the caller looks: a repeated line comes at most this long after its day has passed.
CHECK_EVERY = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Notice:
    level: int
    message: str
    fields: dict[str, Any]


def expiry_notice(snapshot: Snapshot, now: datetime) -> Notice | None:
    """What to say about the serving certificate's expiry now, or None when nothing is due."""
    leaf = snapshot.material.leaf
    not_after = leaf.not_valid_after_utc
    left = not_after - now
    subject = leaf.subject.rfc4514_string()
    fields: dict[str, Any] = {
        "event": "certificate_expiry",
        "subject": subject,
        "fingerprint": snapshot.fingerprint,
        "not_after": f"{not_after:%Y-%m-%dT%H:%M:%SZ}",
        "days_left": left.days,
        "certificate_source": snapshot.source,
    }
    when = f"expires on {not_after:%Y-%m-%d %H:%M} UTC ({_days(left)})"
    if snapshot.source == "self-signed":
        level = logging.ERROR if left <= ERROR_WITHIN else logging.WARNING
        message = (
            f"serving the self-signed default certificate {subject} ({snapshot.fingerprint}), which browsers and gRPC clients "
            f"do not trust; it {when}. Put tls.crt and tls.key into the certificate directory or upload them"
        )
        return Notice(level, message, {**fields, "self_signed": True})
    if left > WARN_WITHIN:
        return None
    level = logging.ERROR if left <= ERROR_WITHIN else logging.WARNING
    message = f"the serving certificate {subject} ({snapshot.fingerprint}) {when}: renew it"
    return Notice(level, message, fields)


def _days(left: timedelta) -> str:
    if left.total_seconds() <= 0:
        return "expired"
    days = left.days
    return "in less than a day" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"


class ExpiryWarnings:
    """Logs each notice once a day: again when a day has passed, at once when the certificate
    or the level changes. `repeat_every` and `check_every` are a day and an hour; a test gives
    shorter ones."""

    def __init__(self, *, repeat_every: timedelta = REPEAT_EVERY, check_every: timedelta = CHECK_EVERY) -> None:
        self.repeat_every = repeat_every
        self.check_every = check_every
        self._last: tuple[str, int] | None = None
        self._logged_at: datetime | None = None

    def check(self, snapshot: Snapshot, now: datetime) -> Notice | None:
        """Log the notice due now, if any; returns it when it was logged."""
        notice = expiry_notice(snapshot, now)
        if notice is None:
            self._last = None
            return None
        key = (snapshot.fingerprint, notice.level)
        if key == self._last and self._logged_at is not None and now - self._logged_at < self.repeat_every:
            return None
        self._last, self._logged_at = key, now
        log.log(notice.level, "%s", notice.message, extra={"fields": notice.fields})
        return notice
