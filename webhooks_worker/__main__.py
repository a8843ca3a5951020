"""``python -m webhooks_worker`` runs a delivery worker with the project's defaults."""

from .celery_app import app

if __name__ == "__main__":  # pragma: no cover
    app.worker_main(["worker", "--loglevel=INFO"])
