"""Market data: sources, validation, bars, features, splits and the forecasting DataModule."""
