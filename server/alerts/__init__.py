"""Rain alerts: pure rules, the episode lifecycle, messages, and the service that runs them.

Inputs (node events and telemetry from the ingest, forecasts) -> pure rules
(``rules``) -> the lifecycle (``engine``, state in SQLite) -> notifiers
(``secadero.server.notifiers``). See docs/alerts.md.
"""
