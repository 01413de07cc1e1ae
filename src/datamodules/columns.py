"""The long bar frame every data source loads: its columns, in order."""

BAR_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
# What a source's load() returns, in this order: _file and _row say where each row came from.
LOAD_COLUMNS = ("ticker", *BAR_COLUMNS, "_file", "_row")
