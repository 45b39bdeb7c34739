"""A throwaway PostgreSQL server on a loopback port, for the tests and the team load benchmark.

`postgres_server()` runs initdb in a new temp folder and starts ``postgres`` as a child process
listening on 127.0.0.1 only (its unix socket in the temp folder too), and stops it and removes the
folder when the ``with`` block ends. If this process dies first, the kernel sends the server
SIGINT (Linux parent-death signal: a fast shutdown), so no server outlives its test run. As root
(CI containers), initdb and postgres refuse to run: they run as ``nobody``, owning the folder.

Needs Debian's ``postgresql`` package (initdb, postgres) and ``psycopg``; `missing()` says which
is absent, for a skip.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUPERUSER = "dynacor"
START_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1


def find_binary(name: str) -> str | None:
    """``name`` on PATH, else in Debian's /usr/lib/postgresql/VERSION/bin (newest version)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3])
    )
    return versions[-1] if versions else None


def missing() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    if not sys.platform.startswith("linux"):
        return "the PostgreSQL test server is Linux-only (parent-death signal)"
    for name in ("initdb", "postgres"):
        if find_binary(name) is None:
            return f"PostgreSQL's {name} not found (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return 'psycopg not installed (pip install "dynacor[postgres]")'
    return None


class PostgresServer:
    """A running server: `url` for SQLAlchemy, `create_database` for a fresh database."""

    def __init__(self, root: Path, port: int, process: subprocess.Popen):
        self.root = root
        self.port = port
        self.process = process
        self._databases = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database (one per test keeps tests apart); its SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres",
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (open sessions are ended), then the folder goes."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_server(settings: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    """Start a server (``settings``: extra ``-c name=value`` options), yield it, stop it."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="dynacor-pg-"))
    server = None
    try:
        user = _unprivileged()
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        _run([find_binary("initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "-A", "trust",
              "-E", "UTF8", "--no-locale", "--no-sync"], root, user)  # fmt: skip
        for _attempt in range(3):  # a free port can be taken by someone else before we bind it
            server = _start(root, _free_port(), user, settings or {})
            if server is not None:
                break
        if server is None:
            raise RuntimeError(f"postgres would not start; its log:\n{_log_tail(root)}")
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _unprivileged() -> pwd.struct_passwd | None:
    # initdb and postgres exit at once when run as root.
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("nobody")


def _child_setup(user: pwd.struct_passwd | None) -> dict:
    """Popen arguments: the unprivileged user, and a death signal tied to this process."""

    def die_with_parent() -> None:
        # Runs in the child after the user switch (a switch would clear the setting).
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)

    kwargs: dict = {"preexec_fn": die_with_parent, "env": {**os.environ, "LC_ALL": "C"}}
    if user is not None:
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        kwargs["env"]["HOME"] = "/"
    return kwargs


def _run(command: list, root: Path, user: pwd.struct_passwd | None) -> None:
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120,
                            **_child_setup(user))  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{result.stdout}\n{result.stderr}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(
    root: Path, port: int, user: pwd.struct_passwd | None, settings: dict[str, str]
) -> PostgresServer | None:
    options = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": str(root),
               "max_connections": "200", **settings}  # fmt: skip
    command = [find_binary("postgres"), "-D", str(root / "data")]
    for name, value in options.items():
        command += ["-c", f"{name}={value}"]
    log = open(root / "postgres.log", "ab")  # noqa: SIM115 (the child writes to it until it stops)
    process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                               **_child_setup(user))  # fmt: skip
    log.close()
    server = PostgresServer(root, port, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        if _accepts(port):
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(
        f"postgres did not accept connections in {START_TIMEOUT_S:.0f} s:\n{_log_tail(root)}"
    )


def _accepts(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(
            f"host=127.0.0.1 port={port} user={SUPERUSER} dbname=postgres", connect_timeout=2
        ):
            return True
    except psycopg.OperationalError:
        return False


def _log_tail(root: Path) -> str:
    try:
        return (root / "postgres.log").read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"
