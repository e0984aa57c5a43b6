"""Webhook signatures. Conveyor signs every delivery as the Standard Webhooks spec says
(`webhook-id`, `webhook-timestamp`, `webhook-signature`), so the spec's own package checks
them: this module only adapts its call."""

from __future__ import annotations

from typing import Any, Mapping, Union

from standardwebhooks import Webhook, WebhookVerificationError

__all__ = ["verify_webhook", "WebhookVerificationError"]


def verify_webhook(body: Union[bytes, str], headers: Mapping[str, str], secret: str) -> Any:
    """Checks a delivery's signature against the endpoint's secret (``whsec_…``) and that it
    is recent (five minutes either way), and returns its JSON. Pass the raw body as received:
    parsed and re-serialized JSON no longer matches its signature. Raises
    ``WebhookVerificationError`` when the delivery is not Conveyor's."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return Webhook(secret).verify(body, lowered)
