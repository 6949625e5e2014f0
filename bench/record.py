"""Records: the JSON files under bench/results/ that every figure in the README and docs/ comes from.

Each bench/ script ends with ``write_record(name, values, script=__file__, argv=argv, inputs=...)``, which writes
bench/results/NAME.json atomically (a temporary file beside it, then ``os.replace``): a killed run leaves the old
record or the new one, never half of one. A record opens with where and how it was made (``provenance()``):

- ``commit``: HEAD, with ``+dirty`` where tracked files outside bench/results/ differ from it;
- ``command``: the command line as run (``python bench/NAME.py ARGS``);
- ``cores`` (``os.cpu_count()``), ``cpu_model`` (/proc/cpuinfo), ``load_average`` (1, 5 and 15 minutes, at the
  end of the run: the machines here are shared, and a speed means little without it);
- ``python`` and ``torch`` versions, ``written_utc``;

then ``inputs`` (what the script read: files with their sha256, sizes, seeds) and the script's own values.
``bench/ablate.py`` keeps one record per setting in one file (``entry=``), each with its own provenance.

Records written before this module existed lack some of these fields; ``LEGACY`` names them, with what they lack
and why they are not written again, and tests/test_records.py holds every other record to the full set.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from hashlib import sha256
from importlib import metadata
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PROVENANCE = ("commit", "command", "cores", "cpu_model", "load_average", "python", "torch", "written_utc", "inputs")

# record file -> (fields it lacks, why it is not written again). Each costs hours on the 2-core machine, or needs a
# model no longer kept; run its command to replace it, then take it off this list (tests/test_records.py says when).
LEGACY: dict[str, tuple[tuple[str, ...], str]] = {
    "ablate.json": (("commit", "cores", "cpu_model", "load_average", "python", "torch", "written_utc", "inputs"),
                    "two settings of python bench/ablate.py, each over an hour of training; each entry keeps its command"),
    "prompt_geometry.json": (("commit", "command", "cores", "cpu_model", "load_average", "python", "torch", "written_utc",
                              "inputs"),
                             "python bench/prompt_geometry.py --checkpoint on the ablation's steps=1800 model, which is "
                             "not kept (training it again is over an hour)"),
}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def commit() -> str:
    """HEAD, with '+dirty' where tracked files outside bench/results/ differ from it."""
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    return (_git("rev-parse", "HEAD") or "unknown") + ("+dirty" if dirty else "")


def command(script: str | os.PathLike, argv: Sequence[str] | None = None) -> str:
    """``python bench/NAME.py ARGS``: the script relative to the repository, ``argv`` (default sys.argv[1:]) quoted."""
    path = Path(script).resolve()
    name = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", name, *map(shlex.quote, map(str, args))])


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)  # the installed version, without importing the package
    except metadata.PackageNotFoundError:
        return None


def provenance(script: str | os.PathLike, argv: Sequence[str] | None = None) -> dict:
    """Where and how a record is made (the module docstring), ``inputs`` aside."""
    return {
        "commit": commit(),
        "command": command(script, argv),
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": _version("torch"),
        "written_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def file_input(path: str | os.PathLike) -> dict:
    """An input file as a record names it: its path (relative to the repository's parent where it lies there, so
    ../shared/... reads the same on every checkout), bytes and sha256."""
    path = Path(path).resolve()
    shown = os.path.relpath(path, REPO) if path.is_relative_to(REPO.parent) else str(path)
    return {"path": shown, "bytes": path.stat().st_size, "sha256": sha256(path.read_bytes()).hexdigest()}


def record_path(name: str) -> Path:
    return RESULTS / f"{name}.json"


def write_record(name: str, values: dict, *, script: str | os.PathLike, argv: Sequence[str] | None = None,
                 inputs: dict | None = None, entry: str | None = None, out: str | os.PathLike | None = None) -> dict:
    """Write ``{provenance, inputs, **values}`` to ``out`` (default bench/results/NAME.json) atomically and return it.

    With ``entry``, the file holds one record per entry: the others already in it are kept and this one replaces
    its namesake (bench/ablate.py: one entry per setting)."""
    path = Path(out) if out is not None else record_path(name)
    clash = set(values) & set(PROVENANCE)
    if clash:
        raise ValueError(f"{name}: values may not set the provenance fields {sorted(clash)}")
    record = {**provenance(script, argv), "inputs": inputs or {}, **values}
    document = record
    if entry is not None:
        document = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        document[entry] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(document, indent=1, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return record


def entries(document: dict) -> dict[str, dict]:
    """The records a file holds: itself, or one per entry where it was written with ``entry=`` (no ``command`` of
    its own, every value a record with one)."""
    if "command" not in document and document and all(isinstance(v, dict) and "command" in v for v in document.values()):
        return document
    return {"": document}


def missing_provenance(document: dict) -> dict[str, list[str]]:
    """Entry ('' for a plain record) -> the provenance fields it lacks; entries lacking none are left out."""
    return {k: missing for k, r in entries(document).items() if (missing := [f for f in PROVENANCE if f not in r])}
