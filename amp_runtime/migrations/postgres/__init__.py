"""PostgreSQL twins of the DuckDB migrations one level up: same numbers, same tables, PostgreSQL types."""
