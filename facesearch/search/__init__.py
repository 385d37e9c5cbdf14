"""Stage 6, finding: one photo against the index (query) and the index against itself (dedupe)."""
