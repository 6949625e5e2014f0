"""The real Dagster webserver starts on loopback, serves the asset graph over GraphQL, and stops."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUERY = "{ assetNodes { assetKey { path } groupName } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_webserver_serves_asset_graph(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "CTGLIP_DATA": str(tmp_path / "data")}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    exe = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(exe), "-h", "127.0.0.1", "-p", str(port), "-m", "assets.definitions"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        nodes = None
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"webserver exited early:\n{proc.stdout.read().decode()[-3000:]}")
            try:
                nodes = _graphql(port, QUERY)["data"]["assetNodes"]
                if nodes:
                    break
            except (OSError, KeyError, TypeError, ValueError):
                pass
            time.sleep(1)
        assert nodes, "webserver did not answer with the asset graph in time"
        keys = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
        assert keys["grounded_pairs"] == "pairs"
        assert keys["ct_studies"] == "ingest"
        assert keys["evaluation_report"] == "evaluation"
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode is not None
