"""Subprocesses on loopback, and what /proc says about them (CPU time, RSS, peak RSS)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat_seconds(pid: int, first: int) -> float:
    """The sum of two clock-tick fields of ``/proc/<pid>/stat`` from ``first`` (counted after
    the command name), in seconds; 0 if the process is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[first]) + int(fields[first + 1])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    return _stat_seconds(pid, 11)


def machine_cpu() -> dict[str, float]:
    """Machine-wide CPU seconds since boot, summed over all CPUs: busy, steal and total."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq
    return {
        "busy": busy / CLK_TCK,
        "steal": steal / CLK_TCK,
        "total": (busy + idle + iowait + steal) / CLK_TCK,
    }


def children_cpu_seconds(pid: int) -> float:
    """CPU seconds of the exited children a process has waited for (cutime + cstime)."""
    return _stat_seconds(pid, 13)


def parent_pid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in kB."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                found[name] = int(value.split()[0])
    except OSError:
        pass
    return found


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def plugin_site(root: Path) -> Path:
    """A site directory holding the ``benchfake`` plugin's dist-info, as ``pip install`` would
    leave it; on ``PYTHONPATH`` (with the repository root, where ``bench`` lives), the gateway
    discovers the plugin through its ``metagov.plugins`` entry point."""
    site = root / "site"
    info = site / "metagov_benchfake-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: metagov-benchfake\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[metagov.plugins]\nbenchfake = bench.benchfake:BenchFakePlugin\n"
    )
    return site


def snapshot_source(root: Path) -> Path:
    """Copy ``src/`` and ``migrations/`` under ``root/source``: the servers import this copy
    (it comes first on their ``PYTHONPATH``), so an edit of the working tree during a run cannot
    give two processes of one run different code."""
    target = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "src", target / "src", ignore=ignore)
    shutil.copytree(REPO / "migrations", target / "migrations", ignore=ignore)
    return target


def source_revision() -> dict[str, Any]:
    """The commit measured, and whether ``src/`` or ``migrations/`` differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(  # noqa: S603
                ["git", *args],  # noqa: S607
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "src", "migrations")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "subject": git("log", "-1", "--format=%s"),
        "uncommitted_changes": changed.splitlines(),
    }


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    pid: int
    started_at: float = field(default_factory=time.perf_counter)
    profiler: subprocess.Popen[bytes] | None = None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def memory(self) -> dict[str, int]:
        return memory_kb(self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> dict[str, int]:
        """Stop it (SIGTERM, then SIGKILL); returns its last memory figures."""
        mem = self.memory()
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        if self.profiler is not None:
            try:
                self.profiler.wait(timeout)
            except subprocess.TimeoutExpired:
                self.profiler.kill()
        return mem


def spawn(
    name: str,
    args: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    logs: Path,
    profile_to: Path | None = None,
) -> Proc:
    """Start ``python args...`` with ``env`` added to a clean environment.

    With ``profile_to``, the process runs under ``py-spy record`` (raw collapsed stacks)."""
    log_path = logs / f"{name}.log"
    out = log_path.open("ab")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("METAGOV_")}
    full_env.update(env)
    command = [sys.executable, *args]
    if profile_to is not None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        command = [spy, "record", "--nonblocking", "--format", "raw", "--rate", "100"]
        command += ["-o", str(profile_to)]
        command += ["--", sys.executable, *args]
    popen = subprocess.Popen(  # noqa: S603 (our own interpreter and modules)
        command, env=full_env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
    )
    out.close()
    pid = popen.pid
    proc = Proc(name, popen, log_path, pid)
    if profile_to is not None:
        proc.profiler = popen
        pid = _child_of(popen.pid)
        proc.pid = pid
    return proc


def _child_of(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = (task / "children").read_text().split()
                if children:
                    return int(children[0])
        time.sleep(0.05)
    raise RuntimeError(f"process {pid} started no child")


async def wait_http(port: int, path: str = "/healthz", timeout: float = 60.0) -> None:  # noqa: ASYNC109
    """Wait until ``GET path`` answers 200 on loopback."""
    from bench.httpload import Connection, build_request

    deadline = time.monotonic() + timeout
    request = build_request("GET", path, f"127.0.0.1:{port}")
    last: Any = None
    while time.monotonic() < deadline:
        conn = Connection("127.0.0.1", port)
        try:
            status, _ = await conn.send(request, timeout=2)
            if status == 200:
                return
            last = status
        except (OSError, TimeoutError, ConnectionError) as exc:
            last = exc
        finally:
            conn.close()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing answered 200 on port {port}{path}: {last}")


def redis_command(host: str, port: int, db: int, *args: str) -> Any:
    """One Redis command on a fresh connection (enough for setup: FLUSHDB, EXISTS)."""

    def encode(parts: tuple[str, ...]) -> bytes:
        out = f"*{len(parts)}\r\n".encode()
        for part in parts:
            raw = part.encode()
            out += b"$%d\r\n%s\r\n" % (len(raw), raw)
        return out

    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(encode(("SELECT", str(db))) + encode(args))
        reader = sock.makefile("rb")
        replies: list[Any] = []
        for _ in range(2):
            line = reader.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:]
            if kind == b"-":
                raise RuntimeError(f"redis: {rest.decode()}")
            if kind == b"$":
                size = int(rest)
                replies.append(None if size < 0 else reader.read(size + 2)[:-2].decode())
            elif kind == b":":
                replies.append(int(rest))
            else:
                replies.append(rest.decode())
        return replies[1]


class Sampler:
    """Samples the RSS of some processes every ``interval`` seconds while running."""

    def __init__(self, procs: dict[str, int], interval: float = 0.25) -> None:
        self.procs = procs
        self.interval = interval
        self.series: dict[str, list[tuple[float, int]]] = {name: [] for name in procs}
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.perf_counter()

    async def _run(self) -> None:
        while True:
            now = time.perf_counter() - self._t0
            for name, pid in self.procs.items():
                rss = memory_kb(pid).get("VmRSS")
                if rss is not None:
                    self.series[name].append((round(now, 2), rss))
            await asyncio.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def peak_mb(self, name: str) -> float | None:
        values = [rss for _, rss in self.series.get(name, [])]
        return round(max(values) / 1024, 1) if values else None
