"""What a delivery's end sets off beyond the delivery itself.

When a written decision ends a delivery (``Decision.completed``), two things may follow,
in the writer's transaction where it has one (``records``):
- failed for good: ``message.attempt.exhausted`` is reported (docs/api.md §11.5), unless
  the delivery was itself a notice's or a test's (``operational_events.reportable``);
- delivered or failed for good, of its resource's final event to an endpoint bound to
  that resource: the endpoint is deleted (docs/api.md §11.4). Not before: while the final
  event's retries are pending the delivery has not ended.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ...models import DeliveryStatus
from ...transitions import Decision
from ..endpoint_lifecycle import RESOURCE_ENDED, end_endpoint
from ..operational_events import report_exhausted, reportable
from .claimed import Claimed


def _exhausted(claimed: Claimed, decision: Decision) -> bool:
    return decision.completed == DeliveryStatus.FAILED and reportable(
        event_type=claimed.event_type, trigger=claimed.trigger
    )


def follows(claimed: Claimed, decision: Decision) -> bool:
    """Whether this written decision sets anything off (most set off nothing)."""
    if decision.completed is None:
        return False
    return claimed.ends_binding or _exhausted(claimed, decision)


def follow_up(session: Session, claimed: Claimed, decision: Decision) -> None:
    """Report a failure for good and end a bound endpoint, as the decision calls for."""
    if decision.completed is None:
        return
    if _exhausted(claimed, decision):
        report_exhausted(
            session,
            endpoint_id=claimed.endpoint_id,
            message_id=claimed.message_id,
            delivery_id=claimed.delivery_id,
            event_type=claimed.event_type,
            attempts=decision.attempt_number,
            status_code=decision.attempt.status_code,
            error=decision.attempt.error,
        )
    if claimed.ends_binding:
        end_endpoint(session, endpoint_id=claimed.endpoint_id, reason=RESOURCE_ENDED)
