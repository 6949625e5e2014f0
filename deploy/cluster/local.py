"""The cluster on one machine: PostgreSQL and Redis (Debian's packages) on loopback, two Celery workers
(`cpu` and `cpu,gpu`), the Dagster daemon and webserver. For a try-out (`make cluster`) and for
tests/test_distributed.py, which start the same pieces through these functions.

    python -m deploy.cluster.local up --state .cluster      # Ctrl-C stops everything

Every piece reads deploy/cluster/dagster.yaml (copied into <state>/dagster_home) and deploy/cluster/celery.yaml;
the environment of `cluster_env` tells them where PostgreSQL, Redis and the data root are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from launch.cli_env import without_pointer_vars

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DAGSTER_YAML = HERE / "dagster.yaml"
CELERY_YAML = HERE / "celery.yaml"
WORKSPACE_YAML = HERE / "workspace.yaml"
BIN = Path(sys.executable).parent  # the venv's dagster, dagster-celery, dagster-webserver
INSTALL_HINT = "run deploy/cluster/install-servers.sh as root (apt-get install postgresql redis-server)"


@dataclass(frozen=True)
class Ports:
    postgres: int = 5433  # not Debian's 5432 / 6379, which a system service may hold
    redis: int = 6380
    webserver: int = 3001


@dataclass(frozen=True)
class Cluster:
    state: Path  # databases, logs, the Dagster home
    data_root: Path  # $CTGLIP_DATA: a shared filesystem path when the workers are other machines
    ports: Ports

    @property
    def env(self) -> dict[str, str]:
        """What every process of the cluster needs in its environment."""
        return {
            "DAGSTER_HOME": str(self.state / "dagster_home"),
            "CTGLIP_POSTGRES_URL": f"postgresql+psycopg2://dagster@127.0.0.1:{self.ports.postgres}/dagster",
            "CTGLIP_CELERY_BROKER": f"redis://127.0.0.1:{self.ports.redis}/0",
            "CTGLIP_CELERY_BACKEND": f"redis://127.0.0.1:{self.ports.redis}/1",
            "CTGLIP_DAGSTER_SHARED": str(self.state / "dagster_shared"),
            "CTGLIP_DATA": str(self.data_root),
        }


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries of Debian's packages (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def missing_servers() -> str | None:
    """Why the cluster cannot start here, or None when PostgreSQL and Redis are installed."""
    missing = [name for name, ok in (("PostgreSQL (initdb)", postgres_bin() is not None), ("redis-server", shutil.which("redis-server") is not None)) if not ok]
    return f"{' and '.join(missing)} not installed; {INSTALL_HINT}" if missing else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; Debian's package creates the `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _wait(ready, what: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting; {log} ends:\n{tail}")
        try:
            if ready():
                return
        except Exception:  # not up yet: connection refused and the like
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s; see {log}")


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        # own session: stopping it stops its children too (celery under dagster-celery, postgres backends)
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def start_postgres(cluster: Cluster) -> subprocess.Popen:
    """A PostgreSQL server on 127.0.0.1 with a `dagster` database (trust auth: loopback only)."""
    pg = postgres_bin()
    if pg is None:
        raise RuntimeError(missing_servers())
    data = cluster.state / "postgres"
    if not (data / "PG_VERSION").is_file():
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        subprocess.run(_as_postgres([str(pg / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True)
    log = cluster.state / "logs" / "postgres.log"
    proc = _spawn(_as_postgres([
        str(pg / "postgres"), "-D", str(data), "-p", str(cluster.ports.postgres),
        "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
    ]), log)

    import psycopg2

    def connect():
        return psycopg2.connect(host="127.0.0.1", port=cluster.ports.postgres, user="dagster", dbname="postgres")

    _wait(lambda: connect().close() is None, "PostgreSQL", proc, log)
    conn = connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = 'dagster'")
        if cur.fetchone() is None:
            cur.execute("CREATE DATABASE dagster")
    conn.close()
    return proc


def start_redis(cluster: Cluster) -> subprocess.Popen:
    """Redis on 127.0.0.1, the Celery broker and result backend; nothing persisted to disk."""
    folder = cluster.state / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    log = cluster.state / "logs" / "redis.log"
    proc = _spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(cluster.ports.redis), "--save", "", "--appendonly", "no", "--dir", str(folder)], log)
    import redis

    _wait(lambda: redis.Redis(host="127.0.0.1", port=cluster.ports.redis).ping(), "Redis", proc, log)
    return proc


def prepare_home(cluster: Cluster) -> dict[str, str]:
    """The Dagster home holding deploy/cluster/dagster.yaml, and the environment every process gets."""
    home = cluster.state / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    (cluster.state / "dagster_shared").mkdir(parents=True, exist_ok=True)
    cluster.data_root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **cluster.env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # dagster-celery starts `celery` from PATH
    # the code location comes from deploy/cluster/workspace.yaml; an exported module name would clash with it
    return without_pointer_vars(env)


def start_worker(cluster: Cluster, name: str, queues: tuple[str, ...], env: dict[str, str]) -> subprocess.Popen:
    """One Celery worker listening on `queues`. The solo pool runs one step at a time in the worker process,
    so a step may start its own process pool (ingest and segmentation do); run more workers for more steps."""
    cmd = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(CELERY_YAML), "-n", name]
    for q in queues:
        cmd += ["-q", q]
    cmd += ["--", "--pool", "solo"]
    log = cluster.state / "logs" / f"worker-{name}.log"
    proc = _spawn(cmd, log, env=env, cwd=REPO)
    _wait(lambda: "ready." in log.read_text(errors="replace"), f"Celery worker {name}", proc, log, timeout=180)
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Stop a process started by `_spawn` and everything in its session."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


WORKERS = (("cpu", ("cpu",)), ("gpu", ("cpu", "gpu")))


def up(cluster: Cluster) -> int:
    reason = missing_servers()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    procs: list[tuple[str, subprocess.Popen]] = []
    # each piece runs in a session of its own, so a stop sent to this process alone (a service manager's SIGTERM,
    # a closed terminal's SIGHUP) must stop them as Ctrl-C does, or they outlive it
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        procs.append(("postgres", start_postgres(cluster)))
        procs.append(("redis", start_redis(cluster)))
        env = prepare_home(cluster)
        for name, queues in WORKERS:
            procs.append((f"worker {name}", start_worker(cluster, name, queues, env)))
            print(f"Celery worker {name!r} listening on {','.join(queues)}", flush=True)
        workspace = ["-w", str(WORKSPACE_YAML)]
        procs.append(("daemon", _spawn([str(BIN / "dagster-daemon"), "run", *workspace], cluster.state / "logs" / "daemon.log", env=env, cwd=REPO)))
        procs.append(("webserver", _spawn([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(cluster.ports.webserver), *workspace],
                                          cluster.state / "logs" / "webserver.log", env=env, cwd=REPO)))
        exports = " ".join(f"{k}={v}" for k, v in cluster.env.items())
        print(
            f"\nct-glip cluster up: PostgreSQL 127.0.0.1:{cluster.ports.postgres}, Redis 127.0.0.1:{cluster.ports.redis}, "
            f"UI http://127.0.0.1:{cluster.ports.webserver} (runs queue there; the daemon starts them).\n"
            f"Logs: {cluster.state / 'logs'}.  From another shell, the same instance:\n"
            f"  {exports} .venv/bin/dagster asset materialize -m launch.cluster --select source_archive\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while all(p.poll() is None for _, p in procs):
            time.sleep(1)
        dead = [name for name, p in procs if p.poll() is not None]
        print(f"stopped: {', '.join(dead)} exited; see {cluster.state / 'logs'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for _, p in reversed(procs):
            stop(p, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown, Celery's warm one


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster.local", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up"], help="up: start every piece and wait (Ctrl-C stops them)")
    parser.add_argument("--state", type=Path, default=REPO / ".cluster", help="folder for the databases, logs and Dagster home (default ./.cluster)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CTGLIP_DATA", REPO / "data")), help="data root every worker writes: a path all machines share (default $CTGLIP_DATA or ./data)")
    parser.add_argument("--postgres-port", type=int, default=Ports.postgres)
    parser.add_argument("--redis-port", type=int, default=Ports.redis)
    parser.add_argument("--ui-port", type=int, default=Ports.webserver)
    args = parser.parse_args(argv)
    cluster = Cluster(args.state.resolve(), args.data.resolve(), Ports(args.postgres_port, args.redis_port, args.ui_port))
    return up(cluster)


if __name__ == "__main__":
    raise SystemExit(main())
