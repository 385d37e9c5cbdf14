"""Stage 4, the store: an index folder -- SQLite catalogue, people tables, lock, manifest -- and its vectors."""
