"""Defaults for the `dagster` CLI run from the project root, imported at interpreter start-up by the
`ct_glip_dagster.pth` file that `make setup` puts in .venv (stdlib only: it runs for every Python in the venv).

`dagster asset materialize` ignores pyproject's [tool.dagster] block and finds Definitions only through `-m` or
DAGSTER_MODULE_NAME. Exporting that variable in the shell breaks `dagster dev`: its webserver and daemon get a
workspace file *and* the variable, refuse the pair, and the UI never comes up. So the variable is never exported;
this hook sets it inside the one process that needs it, a `dagster asset|job ...` command started in the project
root, and points every `dagster` command there at the project-local instance, activated or not.
Explicit settings (-m, -f, -w, an exported variable) win: only unset variables are filled in.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = "assets.definitions"
POINTER_COMMANDS = {"asset", "job"}  # the subcommands that take -m/-f and not a workspace
POINTER_FLAGS = {"-m", "--module-name", "-f", "--python-file", "--package-name", "--autoload-defs-module-name", "-w", "--workspace"}


def defaults(argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """The variables to add for this command line: empty unless it is the `dagster` CLI in the project root."""
    if not argv or Path(argv[0]).name != "dagster" or cwd.resolve() != ROOT:
        return {}
    out = {}
    if "DAGSTER_HOME" not in env:
        out["DAGSTER_HOME"] = str(ROOT / ".dagster_home")
    pointer_vars = ("DAGSTER_MODULE_NAME", "DAGSTER_PYTHON_FILE", "DAGSTER_PACKAGE_NAME")
    if len(argv) > 1 and argv[1] in POINTER_COMMANDS and not POINTER_FLAGS & set(argv) and not any(v in env for v in pointer_vars):
        out["DAGSTER_MODULE_NAME"] = MODULE
    return out


def apply() -> None:
    try:
        os.environ.update(defaults(sys.argv, Path.cwd(), dict(os.environ)))
    except Exception:  # a start-up hook must never stop Python from starting
        pass


apply()
