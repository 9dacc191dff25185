"""Ground-truth benchmark: the zoo of planted models, games, ledger, runner."""
