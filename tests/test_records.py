"""Every figure has a source (issue 32): each committed record under bench/results/ says how and where it was made, the
tables in README.md and docs/ are the ones bench/doc_tables.py draws from those records (and the figures the prose
quotes are theirs), and every bench/ script writes its record through bench/record.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import doc_tables  # noqa: E402
import record  # noqa: E402

HELPERS = {"cohort.py", "record.py", "report_corpus.py", "doc_tables.py"}  # modules of bench/, not benches


def committed() -> list[str]:
    out = subprocess.run(["git", "ls-files", "bench/results/*.json"], cwd=REPO, capture_output=True, text=True).stdout
    return sorted(Path(p).name for p in out.split())


def test_every_committed_record_carries_its_provenance():
    names = committed()
    assert {"benchmark.json", "deid.json", "organ_level.json"} <= set(names)
    lacking = {}
    for name in names:
        missing = record.missing_provenance(json.loads((record.RESULTS / name).read_text(encoding="utf-8")))
        allowed = set(record.LEGACY.get(name, ((), ""))[0])
        extra = {entry: sorted(set(fields) - allowed) for entry, fields in missing.items() if set(fields) - allowed}
        if extra:
            lacking[name] = extra
    assert not lacking, f"records without their provenance (write them with bench/record.py): {lacking}"


def test_the_legacy_list_holds_only_records_that_still_lack_fields():
    for name, (fields, why) in record.LEGACY.items():
        assert why and fields, name
        path = record.RESULTS / name
        assert path.is_file(), f"{name} is on bench/record.py's LEGACY but not under bench/results/"
        missing = set().union(*record.missing_provenance(json.loads(path.read_text(encoding="utf-8"))).values())
        assert missing, f"{name} has its full provenance now: take it off LEGACY in bench/record.py"


def test_gitignore_keeps_exactly_the_committed_records():
    kept = set(re.findall(r"^!bench/results/(\S+\.json)$", (REPO / ".gitignore").read_text(), re.M))
    assert kept == set(committed())


def test_generated_tables_and_quoted_figures_match_the_committed_records():
    """What `python bench/doc_tables.py --check` says: every generated block is what the records give now, every block
    is in a page, and every figure the prose quotes is its record's."""
    assert doc_tables.problems() == []


def test_a_table_that_drifts_from_its_record_is_caught():
    block = doc_tables.BLOCKS["ctrate-macro"]
    begin, end = block.markers
    page = f"intro\n{begin}\nold table\n{end}\noutro, naming {begin} in prose\n"
    fresh = doc_tables.rewrite(page)
    assert "old table" not in fresh and fresh.startswith("intro\n") and fresh.endswith(f"naming {begin} in prose\n")
    assert block.render() in fresh and doc_tables.rewrite(fresh) == fresh  # idempotent
    edited = fresh.replace("| all ", "| all (edited) ", 1)
    assert edited != fresh and doc_tables.rewrite(edited) == fresh


def test_the_benchmark_block_is_the_one_bench_benchmark_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_benchmark", BENCH / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert doc_tables.BLOCKS["benchmark"].markers == (bench.README_BEGIN, bench.README_END)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert bench.readme_with_table(readme, json.loads((record.RESULTS / "benchmark.json").read_text())) == doc_tables.rewrite(readme)


def test_every_bench_script_writes_its_record_through_bench_record():
    scripts = [p for p in sorted(BENCH.glob("*.py")) if p.name not in HELPERS]
    assert len(scripts) >= 17
    for path in scripts:
        text = path.read_text(encoding="utf-8")
        assert re.search(r'write_record\(\s*"\w+"', text), f"{path.name} writes no record"
        assert "def commit(" not in text and "rev-parse" not in text, f"{path.name} finds its commit itself"
        assert "write_json" not in text, f"{path.name} writes a record beside bench/record.py"


def test_write_record_writes_provenance_atomically(tmp_path, monkeypatch):
    out = tmp_path / "x.json"
    written = record.write_record("x", {"value": 1}, script=BENCH / "deid.py", argv=["--heldout", "a b.yaml"],
                                  inputs={"n": 3}, out=out)
    assert json.loads(out.read_text()) == written
    assert list(written)[: len(record.PROVENANCE)] == list(record.PROVENANCE) and written["value"] == 1
    assert written["command"] == "python bench/deid.py --heldout 'a b.yaml'" and written["inputs"] == {"n": 3}
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", written["commit"]) and written["cores"] >= 1
    assert len(written["load_average"]) == 3 and written["written_utc"].endswith("+00:00")
    with pytest.raises(ValueError, match="provenance"):
        record.write_record("x", {"commit": "mine"}, script=BENCH / "deid.py", argv=[], out=out)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(record.json, "dumps", broken)
    with pytest.raises(RuntimeError):
        record.write_record("x", {"value": 2}, script=BENCH / "deid.py", argv=[], out=out)
    monkeypatch.undo()
    assert json.loads(out.read_text())["value"] == 1 and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_entries_keep_one_record_per_setting(tmp_path):
    out = tmp_path / "ablate.json"
    for setting in ("a", "b", "a"):
        record.write_record("ablate", {"setting": setting}, script=BENCH / "ablate.py", argv=["--settings", setting],
                            entry=setting, out=out)
    document = json.loads(out.read_text())
    assert list(record.entries(document)) == ["a", "b"] and record.missing_provenance(document) == {}
    assert document["a"]["command"] == "python bench/ablate.py --settings a"
