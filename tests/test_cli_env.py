"""The start-up hook that lets `dagster asset ...` find our Definitions without exporting DAGSTER_MODULE_NAME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launch.cli_env import MODULE, ROOT, defaults

DAGSTER = str(Path(sys.executable).with_name("dagster"))


def test_fills_module_and_home_for_asset_commands_in_the_project_root():
    assert defaults([DAGSTER, "asset", "materialize", "--select", "x"], ROOT, {}) == {
        "DAGSTER_MODULE_NAME": MODULE, "DAGSTER_HOME": str(ROOT / ".dagster_home")}


def test_never_gives_dagster_dev_a_module_name():
    # the webserver and daemon of `dagster dev` refuse a workspace file together with a module name
    assert defaults([DAGSTER, "dev", "-h", "127.0.0.1"], ROOT, {}) == {"DAGSTER_HOME": str(ROOT / ".dagster_home")}
    assert defaults(["-m", "dagster_webserver", "-w", "ws.yaml"], ROOT, {}) == {}


def test_explicit_settings_win(tmp_path):
    assert defaults([DAGSTER, "asset", "list", "-m", "other.defs"], ROOT, {}) == {"DAGSTER_HOME": str(ROOT / ".dagster_home")}
    assert defaults([DAGSTER, "asset", "list"], ROOT, {"DAGSTER_MODULE_NAME": "x", "DAGSTER_HOME": "/h"}) == {}
    assert defaults([DAGSTER, "asset", "list"], tmp_path, {}) == {}  # another project's folder
    assert defaults([sys.executable, "-c", "pass"], ROOT, {}) == {}


@pytest.mark.slow
def test_venv_dagster_lists_assets_without_activation(tmp_path):
    if not any(p.name == "ct_glip_dagster.pth" for p in Path(sys.prefix).glob("lib/python3*/site-packages/*.pth")):
        pytest.skip("the .venv start-up hook is written by `make setup`; this interpreter has none")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(tmp_path)
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    done = subprocess.run([DAGSTER, "asset", "list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"grounded_pairs", "evaluation_report", "ct_studies"} <= set(done.stdout.split())


def test_dagster_dev_children_get_no_pointer_variable():
    from launch.cli_env import POINTER_VARS, without_pointer_vars

    env = {v: "x" for v in POINTER_VARS} | {"DAGSTER_HOME": "/h", "PATH": "/bin"}
    assert without_pointer_vars(env) == {"DAGSTER_HOME": "/h", "PATH": "/bin"}
