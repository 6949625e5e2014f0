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
# The envvars of the CLI's -f/-m/--package-name/-a options: what `dagster dev`'s children must not inherit.
POINTER_VARS = ("DAGSTER_MODULE_NAME", "DAGSTER_PYTHON_FILE", "DAGSTER_PACKAGE_NAME", "DAGSTER_ATTRIBUTE")
POINTER_FLAGS = {"-m", "--module-name", "-f", "--python-file", "--package-name", "--autoload-defs-module-name", "-w", "--workspace"}


def defaults(argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """The variables to add for this command line: empty unless it is the `dagster` CLI in the project root."""
    if not argv or Path(argv[0]).name != "dagster" or cwd.resolve() != ROOT:
        return {}
    out = {}
    if "DAGSTER_HOME" not in env:
        out["DAGSTER_HOME"] = str(ROOT / ".dagster_home")
    if len(argv) > 1 and argv[1] in POINTER_COMMANDS and not POINTER_FLAGS & set(argv) and not any(v in env for v in POINTER_VARS):
        out["DAGSTER_MODULE_NAME"] = MODULE
    return out


def ensure_dagster_home(env: dict[str, str] = os.environ) -> Path | None:
    """Create $DAGSTER_HOME (and an empty dagster.yaml) where it is set but missing: the Dagster CLI refuses a
    home that does not exist, which would fail the first step of a run pointed at a new folder."""
    home = env.get("DAGSTER_HOME")
    if not home:
        return None
    path = Path(home)
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").touch()
    return path


def without_pointer_vars(env: dict[str, str]) -> dict[str, str]:
    """The environment for `dagster dev` and anything given a workspace file: no module/file/package envvar."""
    return {k: v for k, v in env.items() if k not in POINTER_VARS}


def apply() -> None:
    try:
        os.environ.update(defaults(sys.argv, Path.cwd(), dict(os.environ)))
    except Exception:  # a start-up hook must never stop Python from starting
        pass


apply()
