"""Real services for the tests: an ``mlflow server`` process on loopback, and a Python
environment in which accelab is NOT importable (to prove what runs without it)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.5)


@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite backend and served artifacts."""

    root: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (kept open for the process)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        wait_http(f"{self.uri}/health", timeout)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(root, free_port()).start()
    try:
        yield server
    finally:
        server.stop()


HIDE = """# Makes accelab (and the repo's trainables) unimportable in this interpreter: the
# editable install's finder and any path into the repository are removed.
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "accelab" not in repr(f).lower()]
sys.path_hooks[:] = [h for h in sys.path_hooks if "accelab" not in repr(h).lower()]
sys.path[:] = [p for p in sys.path if not p.startswith({repo!r})]
for name in [m for m in sys.modules if m.split(".")[0] in ("accelab", "trainables")]:
    del sys.modules[name]
"""


def without_accelab(folder: Path) -> dict[str, str]:
    """Environment variables for a Python process in which ``import accelab`` fails."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(HIDE.format(repo=str(REPO)))
    return {"PYTHONPATH": str(folder)}


def processes_with(marker: str) -> list[int]:
    """PIDs whose command line mentions ``marker`` (e.g. a cluster's own temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace"
            ):
                pids.append(int(entry.name))
    return pids


def kill_marked(marker: str, grace_s: float = 10.0) -> None:
    """Stop the processes of one Ray cluster only (``ray stop`` would stop every Ray on
    the machine): SIGTERM, then SIGKILL whatever is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_with(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(alive(p) for p in processes_with(marker)):
            time.sleep(0.2)


def alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    return False
