"""The dashboard at /dashboard (SPEC 8): a static shell whose data all comes from the API."""
