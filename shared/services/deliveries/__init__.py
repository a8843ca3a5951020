"""Deliveries: making attempts, asking for manual ones, sweeping what is due, listing.

The package by noun: ``claims`` (claim a try, keep its lease), ``requests`` (the signed
request), ``attempts`` (make one: post, decide, write), ``records`` (write a decision, one
place per database), ``manual`` (resend and recover), ``sweep`` (beat's hand-over of what
is due) and ``listing``. What a delivery's attempt leads to is decided in
``shared.transitions``; how long a retry waits in ``shared.retry_policy``.
"""

from .attempts import AttemptRecord, Outcome, record_attempt, run_manual_attempt, run_scheduled_try
from .claims import LEASE_RENEW_EVERY, LEASE_SECONDS, renew_leases
from .listing import list_endpoint_deliveries
from .manual import recover_failed, request_manual_attempt, request_resend
from .requests import build_request, user_agent
from .sweep import sweep_due

__all__ = [
    "LEASE_RENEW_EVERY",
    "LEASE_SECONDS",
    "AttemptRecord",
    "Outcome",
    "build_request",
    "list_endpoint_deliveries",
    "record_attempt",
    "recover_failed",
    "renew_leases",
    "request_manual_attempt",
    "request_resend",
    "run_manual_attempt",
    "run_scheduled_try",
    "sweep_due",
    "user_agent",
]
