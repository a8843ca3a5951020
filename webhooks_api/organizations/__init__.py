"""The Daytona-style organization service face at /api/webhooks (SPEC 6.2)."""
