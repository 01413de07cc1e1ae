"""Databases the SQL source reads and the ingest command writes: DuckDB (embedded, a file) and
PostgreSQL (a server; TimescaleDB too). ``uri`` parses URIs and masks passwords (stdlib only),
``statements`` builds SQL with bound parameters, ``connection`` opens either kind and reads
into polars, ``tables`` creates and fills tables of bars. Light: the drivers (duckdb, ADBC)
are imported only when a connection is opened.
"""
