"""The operator's side: the admin HTTP server (JSON API, page, health, metrics) and its token."""
