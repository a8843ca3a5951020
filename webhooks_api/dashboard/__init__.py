"""The dashboard at /dashboard: a static shell whose data all comes from the API."""
