"""The market simulator: frictions, the one accounting engine, metrics, backtests."""
