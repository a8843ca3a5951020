"""``python -m webhooks_api.cli``: the ``webhooks`` command."""

from . import main

main()
