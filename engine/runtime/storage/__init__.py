"""Storage: connections (SQLite WAL with group commit, PostgreSQL), prepared statements, tables, migrations."""
