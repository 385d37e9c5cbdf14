"""Real servers for the tests and benchmarks, on loopback only: a Milvus standalone server and a
two-node Ray cluster.

Network rule: nothing started here accepts connections on any address but 127.0.0.1, and
nothing here connects anywhere else.

* Milvus (the PyPI package ``milvus``, the server binary of "Embedded Milvus") binds every one of
  its gRPC ports on all interfaces and has no setting to change that. It therefore runs in a
  network namespace of its own (``unshare --map-root-user --net``: no root needed), where the only
  interface is loopback; a bridge in this namespace listens on 127.0.0.1:PORT and relays each
  connection over a Unix socket to the server's 127.0.0.1:19530 inside. The client sees an
  ordinary ``milvus://127.0.0.1:PORT``.
* Ray: a head node and worker nodes on 127.0.0.1 (Ray's ``cluster_utils``, in a helper process;
  the Ray section below says why not ``ray start``); a driver joins with ``--address 127.0.0.1:PORT``
  (``facesearch`` keeps a loopback address on loopback itself: ``indexing.ray_engine``).

Every process started here is stopped by ``stop()`` (fixtures call it in a finalizer), and the
children ask the kernel to stop them if their parent dies (``PR_SET_PDEATHSIG``).

    python tests/servers.py milvus BASE_DIR     # a server until Ctrl+C (prints its port)
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
MILVUS_PORT = 19530  # inside the server's own network namespace
START_TIMEOUT = 180  # seconds; the server unpacks its binary (~300 MB) on first start
REPO = Path(__file__).resolve().parents[1]


# --- which sockets listen where ----------------------------------------------------------------


def listeners(pids: set[int] | None = None) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in this network namespace (what ``ss -ltn``
    lists, read from /proc/net/tcp and tcp6 so that iproute2 need not be installed); only those of
    the processes ``pids`` when given."""
    inodes = None if pids is None else {ino for pid in pids for ino in _socket_inodes(pid)}
    found = set()
    for name, width in (("tcp", 4), ("tcp6", 16)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and (inodes is None or fields[9] in inodes):  # TCP_LISTEN
                host, port = fields[1].split(":")
                found.add((_ip(bytes.fromhex(host), width), int(port, 16)))
    return found


def off_loopback(root: int) -> list[tuple[str, int]]:
    """Listening sockets of process ``root`` and its descendants that accept connections on more than
    loopback (other jobs on the machine are not ours to judge)."""
    mine = listeners(descendants(root))
    return sorted(a for a in mine if a[0].removeprefix("::ffff:") not in (LOOPBACK, "::1"))


def descendants(root: int) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(target[8:-1])
    except OSError:
        pass
    return out


def _ip(raw: bytes, width: int) -> str:
    """An address as /proc/net/tcp* writes it (32-bit words in host order) -> text."""
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4)) if sys.byteorder == "little" else raw
    return socket.inet_ntop(socket.AF_INET if width == 4 else socket.AF_INET6, words)


# --- Milvus -------------------------------------------------------------------------------------


@dataclass
class MilvusHandle:
    """A running Milvus server reachable at ``uri`` (``milvus://127.0.0.1:PORT``)."""

    port: int
    proc: subprocess.Popen
    base: Path
    version: str = ""

    @property
    def uri(self) -> str:
        return f"milvus://{LOOPBACK}:{self.port}"

    def stop(self) -> None:
        _stop(self.proc, grace=20)


def start_milvus(base: Path, timeout: float = START_TIMEOUT) -> MilvusHandle:
    """Start a Milvus server with its data under ``base``; raise RuntimeError with the reason if it
    cannot start (the fixture turns that into a skip)."""
    if shutil.which("unshare") is None:
        raise RuntimeError("unshare (util-linux) is missing: Milvus must run in a network namespace "
                           "to stay on loopback")
    try:
        import milvus  # noqa: F401
    except ImportError:
        raise RuntimeError("the PyPI package milvus (the server) is not installed") from None
    base.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "milvus", str(base)], stdout=subprocess.PIPE,
                            stderr=open(base / "bridge.log", "w"), text=True, cwd=REPO,
                            preexec_fn=_die_with_parent)
    line = _read_line(proc, timeout)
    if not line.startswith("port "):
        _stop(proc, grace=5)
        log = (base / "bridge.log").read_text(errors="replace")[-600:]
        raise RuntimeError(f"Milvus did not start: {line or 'no answer'} {log}".strip())
    return MilvusHandle(int(line.split()[1]), proc, base, line.split()[2] if len(line.split()) > 2 else "")


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return result[0].strip() if result else ""


def _serve_outer(base: Path) -> None:
    """The bridge on 127.0.0.1:PORT (this namespace) -> the Unix socket -> the server's namespace."""
    sock_path = base / "milvus.sock"
    sock_path.unlink(missing_ok=True)
    inner = subprocess.Popen(["unshare", "--map-root-user", "--net", sys.executable, __file__, "milvus-inner",
                              str(base)], stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    signal.signal(signal.SIGTERM, lambda *_: _finish(inner))
    ready = inner.stdout.readline().strip()
    if not ready.startswith("ready"):
        print(f"failed {ready or 'the server process exited'}", flush=True)
        _finish(inner)
    listener = socket.create_server((LOOPBACK, 0))
    print(f"port {listener.getsockname()[1]} {ready.partition(' ')[2]}", flush=True)
    _relay_forever(listener, lambda: _unix(sock_path), stop=lambda: inner.poll() is not None)
    _finish(inner)


def _serve_inner(base: Path) -> None:
    """In the server's network namespace: loopback up, the server, and the Unix socket relay."""
    _loopback_up()
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(base / "server"))
    for part in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexCoord", "indexNode", "dataCoord",
                 "dataNode"):
        server.config.set(f"{part}.ip", LOOPBACK)  # what each component advertises to the others
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(), os._exit(0)))
    try:
        server.start()
    except Exception as e:  # noqa: BLE001 -- said to the parent in one line
        print(f"failed {type(e).__name__}: {e}", flush=True)
        server.stop()
        return
    sock_path = base / "milvus.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    listener.listen(64)
    from milvus import __version__

    print(f"ready {__version__}", flush=True)
    try:
        _relay_forever(listener, lambda: socket.create_connection((LOOPBACK, MILVUS_PORT)),
                       stop=lambda: not server.running or server.server_proc.poll() is not None)
    finally:
        server.stop()


def _loopback_up() -> None:
    """``ip link set lo up`` without iproute2: a new network namespace starts with lo down."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _unix(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    return s


def _relay_forever(listener: socket.socket, connect, stop) -> None:
    """Accept connections on ``listener``; relay each to a fresh ``connect()`` until ``stop()``."""
    listener.settimeout(1.0)
    while not stop():
        try:
            client, _ = listener.accept()
        except socket.timeout:
            continue
        try:
            upstream = connect()
        except OSError:
            client.close()
            continue
        threading.Thread(target=_pipe_pair, args=(client, upstream), daemon=True).start()


def _pipe_pair(a: socket.socket, b: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            for key, _ in sel.select():
                data = key.fileobj.recv(1 << 20)
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


# --- Ray ----------------------------------------------------------------------------------------
# Ray 2.60 swaps a loopback host for this machine's interface address wherever it meets one
# (``ray start --node-ip-address 127.0.0.1`` included) unless its multi-node switch is off, and with
# that switch off ``ray start`` refuses worker nodes. Ray's own test cluster (``ray.cluster_utils``)
# starts nodes without that check: the cluster runs in a helper process of its own, with the switch
# off, so every node is on 127.0.0.1; drivers join it with ``--address 127.0.0.1:PORT``.

CLUSTER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 as 127.0.0.1 (see above)
               "RAY_AUTH_MODE": "disabled",  # a token in ~/.ray would otherwise switch token auth on
               "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class RayCluster:
    """Ray nodes on loopback, run by a helper process; ``address`` is what ``--address`` takes."""

    address: str
    proc: subprocess.Popen
    temp_dir: Path
    nodes: int = 1

    def add_worker(self, num_cpus: int = 1, timeout: float = 120) -> int:
        """Start a worker node; its number, for :meth:`kill_worker`."""
        return int(self._ask(f"add {num_cpus}", timeout).split()[1])

    def kill_worker(self, number: int, timeout: float = 60) -> None:
        """Kill a worker node outright (raylet, object store, workers), as a machine lost mid-run."""
        self._ask(f"kill {number}", timeout)

    def settle(self, timeout: float = 90) -> None:
        """Wait until the head counts exactly the nodes alive (a killed one is known dead some seconds later)."""
        self._ask(f"settle {timeout}", timeout + 30)

    def _ask(self, command: str, timeout: float) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = _read_line(self.proc, timeout)
        if not answer.startswith("ok"):
            raise RuntimeError(f"ray cluster: {command!r} failed: {answer or 'no answer'}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                pass
        _stop(self.proc, grace=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_ray_cluster(head_cpus: int = 1, timeout: float = 180) -> RayCluster:
    """A head node on 127.0.0.1 with ``head_cpus`` CPUs; raise RuntimeError if it cannot start."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RuntimeError("Ray is not installed") from None
    # Short: Ray's Unix sockets live under it, and a socket path may not exceed 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="fsray-", dir="/tmp"))
    (temp_dir / "ray").mkdir()  # where Ray writes the address of its current cluster (RAY_TMPDIR/ray)
    env = dict(os.environ, **CLUSTER_ENV, RAY_TMPDIR=str(temp_dir))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, __file__, "ray-cluster", str(temp_dir), str(head_cpus)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(temp_dir / "helper.log", "w"),
                            text=True, cwd=REPO, env=env, preexec_fn=_die_with_parent)
    line = _read_line(proc, timeout)
    if not line.startswith("ok "):
        _stop(proc, grace=10)
        log = (temp_dir / "helper.log").read_text(errors="replace")[-600:]
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise RuntimeError(f"the Ray cluster did not start: {line or 'no answer'} {log}".strip())
    return RayCluster(line.split()[1], proc, temp_dir)


def _serve_ray_cluster(temp_dir: Path, head_cpus: int) -> None:
    """The helper process: a head node, then worker nodes added and killed on request (stdin)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_cpus, "num_gpus": 0, "include_dashboard": False, "temp_dir": str(temp_dir / "ray"),
        "node_ip_address": LOOPBACK, "object_store_memory": 200 * 1024 * 1024})
    workers: list = []
    print(f"ok {cluster.address}", flush=True)
    try:
        for line in sys.stdin:
            cmd, *args = line.split()
            if cmd == "add":
                workers.append(cluster.add_node(num_cpus=int(args[0]), num_gpus=0, node_ip_address=LOOPBACK,
                                                object_store_memory=200 * 1024 * 1024))
                print(f"ok {len(workers) - 1}", flush=True)
            elif cmd == "kill":
                cluster.remove_node(workers[int(args[0])], allow_graceful=False)
                print("ok", flush=True)
            elif cmd == "settle":
                t0 = time.monotonic()
                cluster.wait_for_nodes(timeout=float(args[0]))
                print(f"nodes settled after {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
                print("ok", flush=True)
            elif cmd == "stop":
                break
    finally:
        cluster.shutdown()


# --- processes ----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In a child, before exec: the kernel sends it SIGTERM when its parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _finish(inner: subprocess.Popen) -> None:
    _stop(inner, grace=20)
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "milvus":
        _serve_outer(Path(sys.argv[2]))
    elif sys.argv[1] == "milvus-inner":
        _serve_inner(Path(sys.argv[2]))
    elif sys.argv[1] == "ray-cluster":
        _serve_ray_cluster(Path(sys.argv[2]), int(sys.argv[3]))
