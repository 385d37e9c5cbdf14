"""Stage 5, indexing: a run over a collection -- its contract, the worker side, the local and Ray engines, maintenance."""
