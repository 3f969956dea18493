"""Partner webhooks: subscriptions (`api`), the fan-out of logged events into deliveries
(`fanout`), the sending loop (`dispatcher`), Standard Webhooks signatures (`signing`) and the
SSRF guard (`ssrf`)."""
