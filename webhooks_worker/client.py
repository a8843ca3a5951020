"""The worker process's one HTTP client, shared by its tasks and its thread pool."""

from __future__ import annotations

from functools import lru_cache

from shared.config import get_settings
from shared.http import DeliveryClient
from shared.services import deliveries


@lru_cache(maxsize=1)
def http_client() -> DeliveryClient:
    """One pooled HTTP client per worker process."""
    settings = get_settings()
    return DeliveryClient(
        allow=settings.allow_private_targets,
        user_agent=deliveries.user_agent(),
        pool_maxsize=max(10, settings.worker_concurrency),
    )
