"""Scratch PostgreSQL clusters and Redis servers that fault tests start, stop, pause and restart themselves
(never the shared ones). Both listen on 127.0.0.1 on a free port and live in a temporary directory."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("SCRM_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float, up: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.02)
    raise TimeoutError(f"port {port} not {'up' if up else 'down'} after {timeout} s")


class ScratchRedis:
    """A `redis-server --save '' --appendonly no` of the test's own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="scrm-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # The port was free when picked, but another process (a second suite, a server under test) may
        # take it before redis-server binds it: then the port answers, but not with our Redis. A first
        # start that does not get a PONG from its own live process moves to another port (a restart
        # cannot: the clients under test know the port).
        first = self.proc is None
        for _attempt in range(5 if first else 1):
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                 "no", "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._answers():
                return
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            if first:
                self.port = free_port()
        raise RuntimeError(f"scratch redis-server did not start (last port tried: {self.port})")

    def _answers(self, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False  # exited: most likely the port was taken
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self.proc.poll() is None
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def pause(self) -> None:
        """SIGSTOP: the server hangs with its sockets open (connections are accepted, nothing answered)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies only once continued
            self.proc.kill()
            self.proc.wait(10)
        _wait_port(self.port, 10, up=False)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class ScratchPostgres:
    """A PostgreSQL cluster of the test's own (initdb + pg_ctl, run as the `postgres` user)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="scrm-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"

    @staticmethod
    def available() -> bool:
        if not (PG_BIN / "initdb").exists():
            return False
        if os.geteuid() == 0:
            return shutil.which("runuser") is not None and _has_user("postgres")
        return pwd.getpwuid(os.geteuid()).pw_name == "postgres"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, timeout=timeout)

    def init(self, production: bool = False) -> None:
        """A test cluster trades durability for speed (no fsync, small buffers); `production` keeps
        PostgreSQL's defaults (fsync, autovacuum, 128 MB of shared buffers), as an operator's server has."""
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.dir}'\n")
            if not production:
                conf.write("fsync = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 40\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def start_in_recovery(self) -> None:
        """Start as a standby without hot standby: the server runs and answers every connection with
        57P03 "the database system is not accepting connections" (CannotConnectNowError), as a
        server that is starting up does, until `promote()`."""
        (self.data / "standby.signal").touch()
        if os.geteuid() == 0:
            shutil.chown(self.data / "standby.signal", "postgres", "postgres")
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write("\nhot_standby = off\n")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-W", "start")
        _wait_port(self.port, 30)

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
