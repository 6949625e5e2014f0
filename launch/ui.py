"""`make ui`: start `dagster dev` on loopback, print the URL once the UI answers, or say why it did not.

`dagster dev` hands its webserver and daemon a temporary workspace file (`-w`). Both children also read
DAGSTER_MODULE_NAME from the environment (it is the envvar of their `-m` option), and a workspace file together
with a module name is refused ("Invalid set of CLI arguments"): the webserver leaves at once and `dagster dev`
waits for it in silence. `.venv`'s start-up hook (`launch/cli_env.py`) fills DAGSTER_MODULE_NAME in for a
`dagster asset ...` command only, and a user's shell may still export it, so the UI is started here with the module
named on the command line and that variable taken out of the children's environment.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from launch.cli_env import ensure_dagster_home, without_pointer_vars

DEFINITIONS = "assets.definitions"


def dev_command(host: str, port: int) -> list[str]:
    exe = Path(sys.executable).with_name("dagster")
    return [str(exe), "dev", "-m", DEFINITIONS, "-h", host, "-p", str(port)]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def serve(host: str, port: int, timeout_s: float) -> int:
    """Run `dagster dev` until interrupted; 0 on a clean stop, 1 when the UI never came up."""
    url = f"http://{host}:{port}"
    if port_in_use(host, port):
        print(f"error: {host}:{port} is already in use; choose another port, e.g. `make ui UI_PORT={port + 1}`", file=sys.stderr)
        return 1
    ensure_dagster_home()
    cmd = dev_command(host, port)
    print(f"Starting the Dagster UI ({' '.join(cmd[1:])}); waiting up to {timeout_s:.0f} s for {url} ...", flush=True)
    # A parent may have left SIGINT ignored (a background job, a test runner): Ctrl-C must still stop us and them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = subprocess.Popen(
        cmd, env=without_pointer_vars(dict(os.environ)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1, start_new_session=True, preexec_fn=_default_sigint,
    )
    tail: collections.deque[str] = collections.deque(maxlen=40)

    def pump() -> None:
        for line in proc.stdout:
            tail.append(line.rstrip())
            print(line, end="", flush=True)

    threading.Thread(target=pump, daemon=True).start()
    # Ctrl-C and `kill` reach us; the children live in their own session, so pass the stop on.
    signal.signal(signal.SIGTERM, lambda *_: (_stop(proc), sys.exit(0)))
    try:
        deadline = time.monotonic() + timeout_s
        while not answers(url):
            if proc.poll() is not None:
                print(f"\nerror: `dagster dev` exited with code {proc.returncode} before the UI answered. "
                      "Its last lines:\n  " + "\n  ".join(tail), file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"\nerror: the UI did not answer at {url} within {timeout_s:.0f} s (a slow machine? raise "
                      "UI_TIMEOUT). Last lines of `dagster dev`:\n  " + "\n  ".join(tail), file=sys.stderr)
                _stop(proc)
                return 1
            time.sleep(1)
        print(f"\nDagster UI ready: {url}  (Ctrl-C stops it)", flush=True)
        proc.wait()
        return 0 if proc.returncode in (0, -signal.SIGINT) else proc.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m launch.ui",
        description="Serve the ct-glip Dagster UI (webserver and daemon) and print its URL once it answers.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=3000, help="port of the UI (default 3000)")
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("UI_TIMEOUT", 300)),
                        help="seconds to wait for the UI before giving up with the server's last lines (default 300, or $UI_TIMEOUT)")
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
