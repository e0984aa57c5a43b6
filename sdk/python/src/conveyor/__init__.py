"""Conveyor's Python SDK.

- :class:`Client` (and :class:`AsyncClient`): submit jobs, wait for them, list, cancel and
  replay them, publish events, declare job types.
- :class:`Worker`: run the job types your tenant declares, in your own process, over the
  lease protocol (leases, heartbeats, outcomes), with Conveyor's guarantees.
- :func:`verify_webhook`: check a webhook's signature (Standard Webhooks).
"""

from .client import ApiError, AsyncClient, Client
from .webhooks import verify_webhook
from .worker import JobContext, PermanentError, RetryableError, Worker

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "JobContext",
    "PermanentError",
    "RetryableError",
    "Worker",
    "verify_webhook",
]
