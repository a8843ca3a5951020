"""Secrets scrubbed from any text before it is written: log lines, CLI errors, config errors.

Pure and dependency-free, so that settings (``shared.config``) and the log setup
(``shared.logs``) can both use it without importing each other.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"
_PATTERNS = (
    # Standard Webhooks signing secrets (whsec_ + base64).
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), "whsec_" + REDACTED),
    # Our API keys (shared.crypto.API_KEY_PREFIX + urlsafe base64).
    (re.compile(r"whk_live_[A-Za-z0-9_\-]+"), "whk_live_" + REDACTED),
    # JWTs (three base64url parts, the header always starts with eyJ).
    (re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+"), REDACTED),
    # Bearer credentials in echoed headers.
    (re.compile(r"(?i)(bearer\s+)[^\s'\",]+"), r"\1" + REDACTED),
    # Passwords in URLs (postgresql://user:pass@host, redis://:pass@host).
    (re.compile(r"(://[^:/@\s]*:)[^@/\s]+@"), r"\1" + REDACTED + "@"),
)


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every known kind of secret, and the given literal secrets, replaced."""
    for secret in extra_secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
