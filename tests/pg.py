"""A throwaway PostgreSQL server for tests and benchmarks.

``PostgresCluster`` runs ``initdb`` and ``pg_ctl`` in a temporary directory
on a free port (as the ``postgres`` user when we are root: PostgreSQL refuses
to run as root) and can be stopped and started again, for the fault test.
Binaries are looked up on PATH, then in ``/usr/lib/postgresql/*/bin`` (where
Debian's ``postgresql`` package puts them). ``STOPE_TEST_POSTGRES_URL``
points the tests at an existing server instead (no stop/start there).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

REQUIRE_ENV = "STOPE_REQUIRE_SERVICES"
URL_ENV = "STOPE_TEST_POSTGRES_URL"


def services_required() -> bool:
    """In CI a missing service must fail the test, not skip it."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for d in candidates:
        if all((d / exe).exists() for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable_reason() -> str | None:
    """Why no throwaway cluster can be started here (None: it can)."""
    if find_bindir() is None:
        return "PostgreSQL binaries (initdb, pg_ctl, postgres) not found on PATH or in /usr/lib/postgresql/*/bin"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


class ExternalPostgres:
    """An existing server (``STOPE_TEST_POSTGRES_URL``); databases are created on it."""

    can_restart = False

    def __init__(self, url: str) -> None:
        self.base_url = url

    def _admin_dsn(self) -> str:
        return self.base_url.replace("postgresql+psycopg://", "postgresql://")

    def url(self, dbname: str) -> str:
        head, _, _ = self.base_url.rpartition("/")
        return f"{head}/{dbname}"

    def create_database(self, prefix: str = "stope") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        pass


class PostgresCluster:
    """initdb + pg_ctl in a temporary directory, on 127.0.0.1:<free port>."""

    can_restart = True

    def __init__(self, *, durable: bool = False, port: int | None = None) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(unavailable_reason() or "no PostgreSQL binaries")
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        # As root the server runs as 'postgres', which must reach the directory: /tmp, not $TMPDIR.
        self.root = Path(tempfile.mkdtemp(prefix="stope-pg-", dir="/tmp" if self.as_root else None))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.logfile = self.root / "server.log"
        self.port = port or free_port()
        self.durable = durable
        self.user = "stope"

    # --- process control ----------------------------------------------------------
    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False)
        if check and proc.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()}\n{log[-2000:]}")
        return proc

    def init(self) -> PostgresCluster:
        self.socket_dir.mkdir(parents=True)
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
        return self

    def start(self) -> None:
        opts = [f"-p {self.port}", f"-k {self.socket_dir}", "-c listen_addresses=127.0.0.1", "-c max_connections=50"]
        if not self.durable:
            # Tests need a server that stops and starts, not one that survives power loss.
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "-o", " ".join(opts), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: like a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop")

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def destroy(self) -> None:
        try:
            if self.data.exists() and self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- databases ------------------------------------------------------------------
    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "stope") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_server(*, durable: bool = False) -> PostgresCluster | ExternalPostgres:
    """A server to test against: ``STOPE_TEST_POSTGRES_URL`` if set, else a throwaway cluster."""
    external = os.environ.get(URL_ENV)
    if external:
        return ExternalPostgres(external)
    cluster = PostgresCluster(durable=durable).init()
    try:
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster
