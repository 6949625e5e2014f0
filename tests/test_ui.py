"""`make ui`, exactly as a user runs it, serves the UI on loopback; a real headless Chromium reads the asset graph,
the segmentation pictures and the evaluation table of the tiny graph's runs (tests/tiny_graph.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("ingest", "segmentation", "reports", "pairs", "training", "evaluation", "inference")
READY = re.compile(r"Dagster UI ready: (http://\S+)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str) -> dict:
    req = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _listening_sockets(pids: set[int]) -> set[str]:
    """Local addresses on which any of these processes listen (from /proc, no extra tools)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(fields[1])
    return found


def _descendants(pid: int) -> set[int]:
    """pid and every process below it (`dagster dev` starts its servers in a session of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo.extend(children.get(p, []))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture()
def make_ui(tiny_graph, tmp_path):
    """`make ui` on a free port over the tiny graph's Dagster home; yields (url, pid of make); stops it all."""
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tiny_graph.home), "CTGLIP_DATA": str(tiny_graph.root),
           "DAGSTER_MODULE_NAME": "assets.definitions", "UI_TIMEOUT": "400"}
    log = tmp_path / "make_ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["make", "-s", "ui", f"UI_PORT={port}"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 420
        url = None
        while time.time() < deadline and url is None:
            if proc.poll() is not None:
                pytest.fail(f"make ui exited ({proc.returncode}) before the UI answered:\n{log.read_text()[-3000:]}")
            found = READY.search(log.read_text())
            url = found.group(1) if found else None
            time.sleep(1)
        assert url == f"http://127.0.0.1:{port}", f"make ui printed no URL in time:\n{log.read_text()[-3000:]}"
        yield url, proc.pid
    finally:
        pids = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in the terminal
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # everything `make ui` started (dagster dev, webserver, daemon, code server) is gone
        deadline = time.time() + 30
        while time.time() < deadline and any(_running(p) for p in pids):
            time.sleep(0.5)
        left = [p for p in pids if _running(p)]
        assert not left, f"processes left running after make ui stopped: {left}"


@pytest.mark.slow
def test_make_ui_serves_the_graph_in_a_browser(make_ui, tmp_path):
    url, pid = make_ui
    # loopback only: every listening socket of the UI's processes is on 127.0.0.1 (0100007F in /proc/net/tcp)
    listening = _listening_sockets(_descendants(pid))
    assert f"0100007F:{int(url.rsplit(':', 1)[1]):04X}" in listening
    assert all(addr.startswith("0100007F:") for addr in listening), listening

    nodes = _graphql(url, "{ assetNodes { assetKey { path } groupName } }")["data"]["assetNodes"]
    assert {n["groupName"] for n in nodes} == set(GROUPS)

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (tests/system_deps.sh installs it where apt-get and root are at hand)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(120_000)
        try:
            page.goto(f"{url}/asset-groups")
            for group in GROUPS:
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            _dismiss_welcome(page)

            page.goto(f"{url}/assets/organ_masks")
            _dismiss_welcome(page)
            overlay_row = page.locator("tr", has=page.get_by_text("overlay", exact=True))
            overlay_row.get_by_text("[Show Markdown]").click()  # long markdown opens in a dialog
            overlay = page.locator('img[alt="organ overlay"]').first
            expect(overlay).to_be_visible()
            assert overlay.evaluate("img => img.naturalWidth") > 100  # the PNG decoded, not a broken image

            page.goto(f"{url}/assets/evaluation_report")
            _dismiss_welcome(page)
            table_row = page.locator("tr", has=page.get_by_text("table", exact=True))
            expect(table_row).to_be_visible()
            longer = table_row.get_by_text("[Show Markdown]")  # a long table opens in a dialog, a short one is inline
            if longer.count():
                longer.click()
            table = page.locator("table", has_text="random").last
            expect(table).to_be_visible()
            assert {"random", "CLIP", "grounded"} <= set(re.findall(r"random|CLIP|grounded", table.inner_text()))
        except Exception:
            shot = tmp_path / "ui_failure.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failing page: {shot}")
            raise
        finally:
            browser.close()


def _dismiss_welcome(page) -> None:
    """The UI greets a new browser profile with a newsletter dialog that covers the page."""
    from playwright.sync_api import TimeoutError as NoDialog

    try:
        page.get_by_role("button", name="Skip").click(timeout=5_000)
    except NoDialog:
        pass
