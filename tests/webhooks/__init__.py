"""Webhooks: signing, retries, the SSRF guard, and delivery end to end."""
