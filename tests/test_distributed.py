"""The graph from ingest to pairs on real servers: PostgreSQL (run, event and schedule storage) and Redis (Celery
broker) on loopback, two Celery workers (`cpu` and `cpu,gpu`), steps sent to queues by the assets' tags.

`make test` installs the Debian packages first (deploy/cluster/install-servers.sh); this module skips, naming what
is missing, only where they could not be installed. The servers and workers start through deploy/cluster/local.py,
as `make cluster` starts them.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dagster import DagsterEventType, DagsterInstance

from assets.partitions import SHARD_KEYS
from launch.run_all import run_step
from deploy.cluster import local
from pipeline.tables import read_table

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TABLES = ("ct_studies", "rejected_studies", "organ_stats", "report_findings", "report_index",
          "grounded_pairs", "abnormality_pairs", "pair_exclusions", "study_texts")
# ingest -> pairs as `make run` cuts it into runs; segmentation's step is `gpu`-tagged
SOURCE = ("source_archive", False)
SHARDS = ("ct_studies,rejected_studies,canonical_volumes,group:segmentation", True)
REPORTS = ("group:reports", False)
PAIRS = ("group:pairs", False)
RUN_CONFIG = """\
resources:
  source:
    config: {n_studies: 6, seed: 3}
ops:
  ingest: {config: {workers: 1}}
  segmentation: {config: {workers: 1}}
  pair_tables: {config: {split_ratios: [0.5, 0.25, 0.25]}}
"""


def materialize(selection: str, sharded: bool, env: dict, config: Path, **popen) -> subprocess.Popen:
    """`dagster asset materialize` on the cluster's Definitions: the run's steps go to the Celery workers."""
    cmd = [str(local.BIN / "dagster"), "asset", "materialize", "-m", "launch.cluster", "--select", selection, "-c", str(config)]
    if sharded:
        cmd += ["--partition-range", f"{SHARD_KEYS[0]}...{SHARD_KEYS[-1]}"]
    return subprocess.Popen(cmd, env=env, cwd=REPO, **popen)


def run_ok(selection: str, sharded: bool, env: dict, config: Path) -> None:
    proc = materialize(selection, sharded, env, config, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"materialize {selection} failed:\n{out[-4000:]}"


# ct_studies.fingerprint hashes the input files' paths and mtimes on this machine (to skip unchanged work): it
# differs between two data roots by design
MACHINE_LOCAL = {"ct_studies": ["fingerprint"]}


def tables(root: Path) -> dict[str, pd.DataFrame]:
    """Every table under `root`, rows in a stable order, the data root written as <root> in path columns."""
    out = {}
    for name in TABLES:
        df = read_table(name, root).drop(columns=MACHINE_LOCAL.get(name, []))
        for col in df.columns:
            df[col] = df[col].map(lambda v: v.replace(str(root), "<root>") if isinstance(v, str) else v)
        scalar = [c for c in df.columns if df[c].map(lambda v: v is None or isinstance(v, (str, int, float, bool))).all()]
        out[name] = df.sort_values(scalar, kind="mergesort", na_position="first").reset_index(drop=True) if len(df) else df
    return out


@pytest.fixture(scope="module")
def cluster():
    reason = local.missing_servers()
    if reason:
        pytest.skip(reason)
    # not pytest's tmp_path: PostgreSQL runs as the `postgres` user, who cannot enter root's 0700 pytest folder
    state = Path(tempfile.mkdtemp(prefix="ctglip-cluster-"))
    state.chmod(0o755)
    c = local.Cluster(state, state / "data", local.Ports(local.free_port(), local.free_port(), local.free_port()))
    procs = {}
    try:
        procs["postgres"] = local.start_postgres(c)
        procs["redis"] = local.start_redis(c)
        env = local.prepare_home(c)
        for name, queues in local.WORKERS:
            procs[name] = local.start_worker(c, name, queues, env)
        yield c, env, procs
    finally:
        for p in reversed(list(procs.values())):
            local.stop(p, signal.SIGINT)
        shutil.rmtree(state, ignore_errors=True)


def _step_events(instance, run_id: str):
    """(step, queue, worker) seen in one run's engine events: submissions name the queue, workers name themselves."""
    queues, workers = {}, {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        step, msg = entry.step_key, entry.user_message or entry.dagster_event.message or ""
        if msg.startswith("Submitting celery task"):
            queues[step] = msg.rsplit('"', 2)[-2]
        meta = entry.dagster_event.engine_event_data.metadata if entry.dagster_event.engine_event_data else {}
        if "Celery worker" in meta:
            workers.setdefault(step, []).append(str(meta["Celery worker"].value))
    return queues, workers


def test_graph_over_celery_workers_matches_a_local_run(cluster, tmp_path, monkeypatch):
    c, env, procs = cluster
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG)

    # the reference: the same selections on one machine, as `make run` runs them (in process, no Celery)
    local_root = tmp_path / "local"
    monkeypatch.setenv("CTGLIP_DATA", str(local_root))
    with DagsterInstance.ephemeral() as reference:
        for selection, sharded in (SOURCE, SHARDS, REPORTS, PAIRS):
            assert run_step(reference, selection, sharded, yaml.safe_load(RUN_CONFIG)).success, selection
    for key, value in c.env.items():  # from here on this process reads the cluster's instance
        monkeypatch.setenv(key, value)

    run_ok(*SOURCE, env, config)
    # kill the `cpu,gpu` worker while it runs segmentation, the run's gpu step
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    before = {r.run_id for r in instance.get_runs()}
    killed_run = materialize(*SHARDS, env, config, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    run_id = None
    while time.monotonic() < deadline:
        new = [r.run_id for r in instance.get_runs() if r.run_id not in before]
        if new:
            run_id = new[0]
            _, workers = _step_events(instance, run_id)
            if "segmentation" in workers:
                break
        assert killed_run.poll() is None, "the run ended before its segmentation step reached a worker"
        time.sleep(0.2)
    else:
        pytest.fail("segmentation never reached a worker")
    local.stop(procs["gpu"], signal.SIGKILL)
    succeeded = {e.step_key for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)}
    assert "segmentation" not in succeeded, "segmentation finished before the worker was killed: the kill came too late"
    # The run waits for a result that will not come: stop it as an operator would, and record it as failed.
    killed_run.send_signal(signal.SIGINT)
    try:
        killed_run.wait(20)
    except subprocess.TimeoutExpired:
        killed_run.kill()
        killed_run.wait()
    run = instance.get_run_by_id(run_id)
    if not run.is_finished:
        instance.report_run_failed(run, "the test killed the worker running segmentation")

    procs["gpu"] = local.start_worker(c, "gpu", ("cpu", "gpu"), env)
    for step in (SHARDS, REPORTS, PAIRS):
        run_ok(*step, env, config)

    # the re-run completed, and the tables are those of the local run: nothing lost or duplicated by the kill
    ours, theirs = tables(c.data_root), tables(local_root)
    differ = []
    for name in TABLES:
        try:
            pd.testing.assert_frame_equal(ours[name], theirs[name], check_like=True, obj=name)
        except AssertionError as e:
            differ.append(str(e))
    assert not differ, "\n\n".join(differ)
    assert len(ours["grounded_pairs"]) > 0 and len(ours["ct_studies"]) >= 6

    # every step ran on a worker; both workers took steps; a gpu step never ran on the cpu-only worker
    runs = [r for r in instance.get_runs() if r.run_id != run_id]
    assert all(r.status.value == "SUCCESS" for r in runs), [(r.run_id, r.status) for r in runs]
    queue_of, worker_of = {}, {}
    for r in runs:
        q, w = _step_events(instance, r.run_id)
        queue_of.update({(r.run_id, k): v for k, v in q.items()})
        worker_of.update({(r.run_id, k): v for k, v in w.items()})
    assert set(queue_of) == set(worker_of), "a submitted step never reached a worker"
    names = {w.split("@")[0] for ws in worker_of.values() for w in ws}
    assert names == {"cpu", "gpu"}, names
    gpu_steps = [k for k, q in queue_of.items() if q == "gpu"]
    assert gpu_steps, "no gpu-tagged step in the graph"
    for key in gpu_steps:
        assert all(w.startswith("gpu@") for w in worker_of[key]), (key, worker_of[key])
    assert {q for q in queue_of.values()} == {"cpu", "gpu"}
    instance.dispose()


def test_up_stops_every_piece_when_it_is_terminated():
    """`make cluster` stops PostgreSQL, Redis, the workers, the daemon and the UI on SIGTERM as on Ctrl-C: each runs in
    a session of its own, so only `up` can stop them."""
    reason = local.missing_servers()
    if reason:
        pytest.skip(reason)
    ports = local.Ports(local.free_port(), local.free_port(), local.free_port())
    state = Path(tempfile.mkdtemp(prefix="ctglip-up-"))  # not tmp_path: as in the `cluster` fixture
    state.chmod(0o755)
    cmd = [str(local.BIN / "python"), "-m", "deploy.cluster.local", "up", "--state", str(state), "--data", str(state / "data"),
           "--postgres-port", str(ports.postgres), "--redis-port", str(ports.redis), "--ui-port", str(ports.webserver)]
    up = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in up.stdout:
            lines.append(line)
            if "cluster up" in line:
                break
        assert any("cluster up" in x for x in lines), "".join(lines)
        assert len(_pieces(state)) >= 5, "PostgreSQL, the two workers, the daemon and the UI should be running"
        up.send_signal(signal.SIGTERM)
        assert up.wait(120) == 0
        deadline = time.monotonic() + 30
        while (_pieces(state) or _listening(ports)) and time.monotonic() < deadline:
            time.sleep(1)
        assert not _pieces(state) and not _listening(ports), (_pieces(state), _listening(ports))
    finally:
        if up.poll() is None:
            up.kill()
        redis = subprocess.run(["pgrep", "-f", f"redis-server 127.0.0.1:{ports.redis}"], capture_output=True, text=True).stdout
        for pid in [*_pieces(state), *map(int, redis.split())]:
            subprocess.run(["kill", "-KILL", str(pid)], check=False)
        shutil.rmtree(state, ignore_errors=True)


def _pieces(state: Path) -> list[int]:
    """Processes that name the state folder in their command line (PostgreSQL) or environment (workers, daemon, UI:
    their DAGSTER_HOME lies under it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(state).encode() in blob:
            found.append(int(proc.name))
    return found


def _listening(ports) -> list[int]:
    """The cluster's ports (PostgreSQL, Redis, UI) that still accept connections."""
    import socket

    open_ports = []
    for port in (ports.postgres, ports.redis, ports.webserver):
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                open_ports.append(port)
    return open_ports
