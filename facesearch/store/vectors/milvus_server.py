"""What a Milvus *server* (``milvus://HOST:PORT``) needs beyond Milvus Lite.

* One client per server and process: ``serve`` opens the index for every request, and a
  new ``MilvusClient`` is a new gRPC channel (a TCP and HTTP/2 handshake, and a server-side
  session) each time. :func:`shared_client` keeps one open for the life of the process.
* An index built when the collection is written, not when it is first searched: the
  collection is created with :data:`INDEX` and strong consistency, and :func:`wait_indexed`
  (called at ``flush``, i.e. at the end of every writing command) waits until every sealed
  row is in it, so a query never scans. Segments under the server's
  ``minSegmentSizeToEnableIndex`` (1,024 rows) are searched as they are: they are small.
* Request sizes: queries per search request such that each answer stays far below gRPC's
  64 MB message cap (:func:`search_batch`).
* Consistency: answers must equal the catalogue's, so the first search of a collection at a
  given catalogue generation asks for strong consistency (the server waits for its next time
  tick, 200 ms by default, so that every write acknowledged before is visible). Once this process
  has searched that generation strongly, nothing was written since (the stamp would have moved)
  and the query node has seen it all: later searches ask for bounded staleness and cost ~3 ms,
  not ~200 (:func:`consistency`).

The index and the numbers were chosen by measurement (docs/scaling.md, "A Milvus server"), on
100k 256-d face-like vectors: HNSW M=16, efConstruction=200 built in 98 s and, at ef 128,
reached recall@10 0.9965 and answered 1,024 queries (k=16) in 1.06 s; IVF_FLAT (nlist 1024)
took 261 s to build and needed nprobe 64 for the same recall, at 5.8 s per 1,024 queries
(ef 64: recall 0.985; nprobe 32: 0.9875).
"""

from __future__ import annotations

import atexit
import threading
import time

INDEX = {"index_type": "HNSW", "metric_type": "L2", "params": {"M": 16, "efConstruction": 200}}
SEARCH_EF = 128  # HNSW's candidate list (recall@10 0.9965, as FAISS's HNSW here); Milvus needs ef >= k
HITS_PER_REQUEST = 262_144  # (queries x k) per search request: ~3 MB of ids and distances
SEARCH_BATCH = 1_024  # queries per search request at most (the request itself: 1 MB at 256-d)
INDEX_WAIT_S = 1_800.0  # at most this long for the server to index what was flushed

_CLIENTS: dict[tuple[str, str], object] = {}
_SEEN: set[tuple[str, str, int]] = set()  # (uri, collection, generation) searched strongly here
_LOCK = threading.Lock()


def shared_client(uri: str, token: str):
    """The process's open ``MilvusClient`` for ``uri`` (created on first use, closed at exit)."""
    with _LOCK:
        client = _CLIENTS.get((uri, token))
        if client is None:
            from pymilvus import MilvusClient

            client = MilvusClient(uri=uri, token=token)
            if not _CLIENTS:
                atexit.register(close_clients)
            _CLIENTS[(uri, token)] = client
        return client


def forget_client(uri: str, token: str) -> None:
    """Drop a client whose server failed, so the next store connects afresh."""
    with _LOCK:
        client = _CLIENTS.pop((uri, token), None)
    if client is not None:
        _close_quietly(client)


def close_clients() -> None:
    """Close every shared client (at exit; tests that stop a server call it too)."""
    with _LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        _close_quietly(client)


def create_collection(client, name: str, dim: int) -> None:
    """An empty collection, its vector index declared, loaded, strongly consistent (a search sees
    every acknowledged insert and delete: answers must equal the catalogue's)."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_name="vector", **INDEX)
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")


def wait_indexed(client, name: str, timeout: float = INDEX_WAIT_S) -> dict:
    """Block until the server has indexed every flushed row of ``name``; its index description.

    ``pending_index_rows`` is not waited for: after a large load the server compacts segments and
    indexes the merged ones again (775k rows pending at 1M, every row already indexed), and a
    merged segment replaces its parts only once it is indexed itself, so nothing is scanned.
    """
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        info = client.describe_index(name, "vector")
        if int(info.get("indexed_rows", 0)) >= int(info.get("total_rows", 0)):
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"Milvus did not index {name} within {timeout:.0f} s ({info})")
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def row_count(client, name: str) -> int:
    """Rows a search can find (the collection's statistics still count deleted rows)."""
    rows = client.query(name, filter="", output_fields=["count(*)"])
    return int(rows[0]["count(*)"]) if rows else 0


def consistency(uri: str, name: str, generation: int | None) -> str:
    """The consistency level for the next search of ``name`` holding ``generation`` (see the module doc)."""
    return "Bounded" if generation is not None and (uri, name, generation) in _SEEN else "Strong"


def searched(uri: str, name: str, generation: int | None, level: str) -> None:
    """Record a strong search of ``name`` at ``generation``: later ones may be bounded."""
    if level == "Strong" and generation is not None:
        with _LOCK:
            _SEEN.add((uri, name, generation))


def search_params(k: int) -> dict:
    return {"metric_type": "L2", "params": {"ef": max(int(k), SEARCH_EF)}}


def search_batch(k: int) -> int:
    """Queries per search request for k neighbours each."""
    return max(1, min(SEARCH_BATCH, HITS_PER_REQUEST // max(int(k), 1)))


def open_clients() -> int:
    """How many server clients this process holds open (one per server it uses)."""
    with _LOCK:
        return len(_CLIENTS)


def _close_quietly(client) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 -- a dead channel at exit is not worth a traceback
        pass
