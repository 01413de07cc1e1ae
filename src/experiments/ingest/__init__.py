"""``python -m experiments.ingest``: load bars (the shipped sample, a synthetic market, or a CSV
or Parquet file of your own) into a DuckDB file or a PostgreSQL table, validated first, with
a primary key on (ticker, timestamp); an existing table is refused unless ``--if-exists
append`` or ``--if-exists replace`` says what to do. Light: no torch, Lightning or Hydra."""
