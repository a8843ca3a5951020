"""The Daytona-style organization service face at /api/webhooks (docs/api.md §6.2)."""
