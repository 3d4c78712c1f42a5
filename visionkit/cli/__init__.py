"""Every console script (train, eval, predict, export, explain, stylize) on one runner (`runner.py`)."""
