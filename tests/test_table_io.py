"""The table IO manager (assets/io.py): where tables go, what a run records about them, and how they load back."""

import re
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from assets.columns import COLUMNS
from assets.io import ParquetIOManager
from pipeline.tables import read_table, table_path, write_table

REPO = Path(__file__).resolve().parents[1]
SHARDS = dg.StaticPartitionsDefinition(["shard-00", "shard-01", "shard-02"])
RANGE = {"dagster/asset_partition_range_start": "shard-00", "dagster/asset_partition_range_end": "shard-02"}
STATS = pd.DataFrame({
    "study_id": ["stu-a", "stu-a", "stu-b"], "organ": ["liver", "spleen", "liver"], "volume_ml": [1500.0, 200.0, 1400.0],
    "bbox_vox": [[0, 0, 0, 5, 5, 5], [1, 1, 1, 3, 3, 3], [0, 0, 0, 4, 4, 4]], "shard": ["shard-00", "shard-00", "shard-02"],
})


@dg.asset(io_manager_key="table_io", partitions_def=SHARDS, backfill_policy=dg.BackfillPolicy.single_run())
def organ_stats(context: dg.AssetExecutionContext) -> pd.DataFrame:
    """Named like the real table, so its columns take their descriptions from assets/columns.py."""
    return STATS[STATS["shard"].isin(context.partition_keys)].reset_index(drop=True)


@dg.asset(io_manager_key="table_io")
def organs_per_study(organ_stats: pd.DataFrame) -> pd.DataFrame:
    return organ_stats.groupby(["study_id", "shard"], as_index=False).size()


@dg.asset(io_manager_key="table_io", partitions_def=SHARDS, backfill_policy=dg.BackfillPolicy.single_run())
def per_shard(organ_stats: pd.DataFrame) -> pd.DataFrame:
    return organ_stats.assign(seen=len(organ_stats))


def _materialize(root: Path, assets, **kw) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, resources={"table_io": ParquetIOManager(path=str(root))}, **kw)


def test_a_table_round_trips_with_its_shards_in_the_path(tmp_path):
    result = _materialize(tmp_path, [organ_stats, organs_per_study], tags=RANGE)
    assert result.success
    folder = tmp_path / "tables" / "organ_stats"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet")) == [
        "shard=shard-00/part.parquet", "shard=shard-01/part.parquet", "shard=shard-02/part.parquet"]
    # the shard lives in the path only; an empty shard's file has the others' types
    schemas = [pq.read_schema(p) for p in sorted(folder.rglob("*.parquet"))]
    assert "shard" not in schemas[0].names and all(s.equals(schemas[0], check_metadata=False) for s in schemas)
    assert pq.read_table(folder / "shard=shard-01" / "part.parquet").num_rows == 0
    back = read_table("organ_stats", tmp_path)
    pd.testing.assert_frame_equal(back[STATS.columns.tolist()], STATS, check_dtype=False)
    # the unpartitioned downstream took every shard as its input, and is one file
    per_study = pd.read_parquet(tmp_path / "tables" / "organs_per_study.parquet")
    assert per_study.set_index("study_id")["size"].to_dict() == {"stu-a": 2, "stu-b": 1}


def test_one_shard_replaces_only_its_own_file_and_loads_only_itself(tmp_path):
    assert _materialize(tmp_path, [organ_stats], tags=RANGE).success
    before = (tmp_path / "tables" / "organ_stats" / "shard=shard-00" / "part.parquet").read_bytes()
    result = _materialize(tmp_path, [organ_stats, per_shard], partition_key="shard-02")
    assert result.success
    assert (tmp_path / "tables" / "organ_stats" / "shard=shard-00" / "part.parquet").read_bytes() == before
    mine = pd.read_parquet(table_path("per_shard", tmp_path, "shard-02"))
    assert mine["seen"].tolist() == [1] and mine["study_id"].tolist() == ["stu-b"]  # shard-02's one row, not all three


def test_duckdb_reads_the_shards_with_hive_partitioning(tmp_path):
    assert _materialize(tmp_path, [organ_stats, organs_per_study], tags=RANGE).success
    glob = str(tmp_path / "tables" / "organ_stats" / "*" / "*.parquet")
    rows = duckdb.sql(f"SELECT shard, count(*) AS n, sum(volume_ml) AS ml FROM read_parquet('{glob}', hive_partitioning=true) "
                      "GROUP BY shard ORDER BY shard").fetchall()
    assert rows == [("shard-00", 2, 1700.0), ("shard-02", 1, 1400.0)]
    pruned = duckdb.sql(f"SELECT study_id FROM read_parquet('{glob}') WHERE shard = 'shard-02'").fetchall()
    assert pruned == [("stu-b",)]  # the Hive key is detected without the option too
    # the sql/ helper binds a sharded table to that glob
    from sql import _table_source

    assert _table_source("organ_stats", tmp_path) == glob


def test_row_count_and_described_schema_are_recorded_once(tmp_path):
    result = _materialize(tmp_path, [organ_stats], tags=RANGE)
    events = result.asset_materializations_for_node("organ_stats")
    assert sorted(e.partition for e in events) == ["shard-00", "shard-01", "shard-02"]
    meta = events[0].metadata  # one output for the run's shards: the same record on each
    assert meta["dagster/row_count"].value == 3
    columns = {c.name: c for c in meta["dagster/column_schema"].value.columns}
    assert list(columns) == ["study_id", "organ", "volume_ml", "bbox_vox", "shard"]
    assert columns["bbox_vox"].type == "list<item: int64>" and columns["shard"].type.startswith("string")
    assert all(c.description == COLUMNS["organ_stats"][c.name] for c in columns.values())
    assert "stu-a" in meta["preview"].value and meta["path"].value == str(tmp_path / "tables" / "organ_stats")


def test_a_killed_write_leaves_the_previous_table(tmp_path, monkeypatch):
    write_table(STATS.drop(columns="shard"), "grounded_pairs", tmp_path)
    path = table_path("grounded_pairs", tmp_path)
    before = path.read_bytes()

    def dies_halfway(self, where, **kw):
        Path(where).write_bytes(b"PAR1 half a table")
        raise OSError("killed")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", dies_halfway)
    with pytest.raises(OSError, match="killed"):
        write_table(STATS.head(1), "grounded_pairs", tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["grounded_pairs.parquet"]  # no temporary file left behind


def test_a_missing_upstream_names_what_to_materialize(tmp_path):
    result = _materialize(tmp_path, [organ_stats, organs_per_study], selection=[organs_per_study], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "shards shard-00 … shard-02 of organ_stats not found" in message
    assert "`dagster asset materialize --select organ_stats --partition-range shard-00...shard-02`" in message


def test_shards_never_materialized_are_left_out(tmp_path):
    assert _materialize(tmp_path, [organ_stats], partition_key="shard-00").success
    result = _materialize(tmp_path, [organ_stats, organs_per_study], selection=[organs_per_study])
    assert result.success
    assert pd.read_parquet(table_path("organs_per_study", tmp_path))["study_id"].tolist() == ["stu-a"]


def test_tables_of_the_earlier_layout_are_read_and_replaced_shard_by_shard(tmp_path):
    folder = tmp_path / "tables" / "rejected_studies"
    folder.mkdir(parents=True)
    old = pd.DataFrame({"study_id": ["stu-a"], "stage": ["scan"], "reason": ["empty_folder"], "shard": ["shard-00"]})
    old.to_parquet(folder / "ingest-shard-00.parquet")
    old.assign(study_id="stu-b", stage="segmentation").to_parquet(folder / "segmentation-shard-00.parquet")
    old.assign(study_id="stu-c", shard="shard-01").to_parquet(folder / "ingest-shard-01.parquet")
    assert sorted(read_table("rejected_studies", tmp_path)["study_id"]) == ["stu-a", "stu-b", "stu-c"]
    write_table(old.assign(study_id="stu-d"), "rejected_studies", tmp_path, "shard-00")
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["ingest-shard-01.parquet", "segmentation-shard-00.parquet"]
    assert sorted(read_table("rejected_studies", tmp_path)["study_id"]) == ["stu-b", "stu-c", "stu-d"]


@pytest.mark.slow
def test_every_column_of_the_graph_is_described_in_the_ui_and_the_docs(tiny_graph):
    """The UI's Description column is filled for every column of every table the graph writes, from
    assets/columns.py, and docs/DATA.md names each of them."""
    data_md = (REPO / "docs" / "DATA.md").read_text()
    seen = set()
    for name, described in COLUMNS.items():
        event = tiny_graph.instance.get_latest_materialization_event(dg.AssetKey(name))
        assert event is not None, name
        columns = event.asset_materialization.metadata["dagster/column_schema"].value.columns
        assert {c.name: c.description for c in columns} == described, name
        seen.add(name)
        for column in described:
            assert re.search(rf"`{column}`", data_md), f"docs/DATA.md does not name {name}.{column}"
    tables = {p.name.removesuffix(".parquet") for p in (tiny_graph.root / "tables").iterdir() if p.suffix in ("", ".parquet")}
    assert tables == seen


def test_grounded_pairs_without_upstream_says_which_step_to_run(tmp_path, monkeypatch):
    """The README's promise: `grounded_pairs` before its upstream fails naming what to materialize first, in a
    selection Dagster accepts (the ingest multi-asset cannot make ct_studies alone). Run as `make run` runs a step."""
    from launch.run_all import run_step

    monkeypatch.setenv("CTGLIP_DATA", str(tmp_path))
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_step(instance, "grounded_pairs", False, {})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert ("`dagster asset materialize --select ct_studies,rejected_studies,canonical_volumes --partition-range "
            "shard-00...shard-07`") in failure.step_failure_data.error.message
