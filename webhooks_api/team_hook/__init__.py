"""The E2B-style team lifecycle hook face at /events/webhooks/sandboxes (SPEC 6.3)."""
