// Webhook signatures. Conveyor signs every delivery as the Standard Webhooks spec says
// (`webhook-id`, `webhook-timestamp`, `webhook-signature`), so the spec's own package checks
// them; this module only adapts its call.

import { Webhook, WebhookVerificationError } from "standardwebhooks";

export { WebhookVerificationError };

/** Checks a delivery's signature against the endpoint's secret (`whsec_…`) and that it is
 * recent, and returns its JSON. Pass the raw body as received. Throws
 * `WebhookVerificationError` when the delivery is not Conveyor's. */
export function verifyWebhook(body: string, headers: Record<string, string | string[] | undefined>, secret: string): unknown {
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined) flat[k.toLowerCase()] = Array.isArray(v) ? v.join(",") : v;
  // Conveyor's secrets are `whsec_` + base64, the form the package takes.
  return new Webhook(secret).verify(body, flat);
}
