"""The E2B-style team lifecycle hook face at /events/webhooks/sandboxes (docs/api.md §6.3)."""
