"""The vector-store seam (interface, factory), FAISS and Milvus stores, and plain array operations."""
