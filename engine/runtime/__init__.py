"""The engine at work, divided by role so a file's folder says what it may touch.

- `storage/`    the database: connections and group commit, prepared statements, tables, migrations
- `records/`    RecordService, the only writer, and what it needs: values, field kinds, permissions,
                queries, the event log, errors
- `automation/` decisions applied inside a write: rules, routing, SLA clocks, cadences, intake,
                and the one action executor
- `background/` the worker: timers, the outbox and its delivery, scheduled jobs
- `web/`        the Starlette app: JSON API, OpenAPI, auth, webhooks route, widgets, screens
- `ops/`        people and diagnosis: users, doctor, explain

The composition root that wires them is `engine.engine` (`open_engine`); nothing here imports it.
See docs/architecture.md.
"""
