"""facesearch: learn, index, find and deduplicate faces in photo collections."""

import os as _os

__version__ = "0.1.0"

# OpenMP threads in faiss/torch busy-wait between parallel regions by default; on a
# shared or small machine that spin steals the cores from real work (single HNSW
# queries at 1M went from 11.96 ms to 0.80 ms without it; docs/benchmarks.md).
# Set before faiss or torch load libgomp; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
