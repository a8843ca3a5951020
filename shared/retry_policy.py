"""When a failed delivery is tried again: the schedule, its jitter and Retry-After.

Pure: no database, broker or HTTP. ``shared.transitions`` asks it how long to wait.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

# Each wait gets up to this much jitter, added, so that no retry comes earlier than the
# schedule says and a crowd of failures that began together spreads out.
JITTER = 0.2
# Answers whose Retry-After is honoured: "too many requests" and "unavailable" are the
# receiver asking for time. Any other status follows the schedule, whatever it says.
RETRY_AFTER_STATUSES = frozenset({429, 503})
# The longest Retry-After honoured: a day. A receiver asking for more (a date years ahead,
# a huge number) gets a day; the delivery stays pending, visible, and can be resent.
MAX_RETRY_AFTER_SECONDS = 86400.0
# A wait up to this long is handed to the broker as a countdown task; a longer one stays
# in the database and beat's sweep hands the try over shortly before it is due. A worker
# holds a countdown task in memory until it is due and counts it against its prefetch
# limit, so holding every long wait of an outage would grow workers with the outage.
MAX_BROKER_COUNTDOWN = 60.0


def backoff_seconds(
    try_number: int, schedule: Sequence[float], rng: random.Random | None = None
) -> float:
    """Wait before try ``try_number + 1`` after try ``try_number`` failed (1-based), jittered."""
    base = float(schedule[min(try_number, len(schedule)) - 1])
    return base * (1 + (rng or random).uniform(0, JITTER))


def retry_wait(
    try_number: int,
    *,
    status_code: int | None,
    retry_after: float | None,
    schedule: Sequence[float],
    rng: random.Random | None = None,
) -> float:
    """Seconds before the try after failed try ``try_number``: the schedule, or Retry-After.

    Retry-After only lengthens a wait, and only on a 429 or 503, up to a day.
    """
    wait = backoff_seconds(try_number, schedule, rng)
    if retry_after is not None and status_code in RETRY_AFTER_STATUSES:
        wait = max(wait, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return wait


def handed_to_broker(wait: float) -> bool:
    """Whether a retry this far ahead goes to the broker now (else the sweep hands it over)."""
    return wait <= MAX_BROKER_COUNTDOWN
