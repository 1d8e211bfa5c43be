"""Records: RecordService — the only writer — and the values, field kinds, permissions, queries and events it uses."""
