"""The study_embeddings asset on a tiny trained model: one row per (study, organ), heatmaps in its metadata."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from assets.inference import EmbeddingSettings, study_embeddings
from assets.resources import DataRoot
from model.files import fingerprint
from model.fake_data import make_fake_data_root
from model.inference import STUDY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_study_embeddings_asset(tiny_model, tmp_path):
    root = make_fake_data_root(tmp_path / "data", n_studies=3, shape=(40, 40, 36), seed=5)
    ids = sorted(p.name[: -len(".nii.gz")] for p in (root / "volumes").glob("*.nii.gz"))
    (root / "masks" / f"{ids[2]}.nii.gz").unlink()  # as if segmentation had rejected it
    # ct_studies as the table IO manager loads it: the shard's rows with their `shard` column
    studies = pd.DataFrame({"study_id": ids, "volume_path": [f"volumes/{s}.nii.gz" for s in ids], "shard": "shard-00"})
    ref = {"kind": "grounded", "model_path": str(tiny_model), "sha256": fingerprint(tiny_model), "run_id": "test"}
    context = dg.build_asset_context(partition_key="shard-00")
    result = study_embeddings(context, config=EmbeddingSettings(queries=["the liver"], heatmap_studies=1, device="cpu"),
                              data=DataRoot(path=str(root)), ct_studies=studies, grounded_model=ref)
    table = result.value  # what the table IO manager stores, under tables/study_embeddings/shard=shard-00/
    assert list(table.columns) == ["study_id", "organ", "embedding", "shard"] and set(table["study_id"]) == set(ids[:2])
    assert set(table["shard"]) == {"shard-00"}
    assert (table.groupby("study_id")["organ"].apply(lambda o: (o == STUDY).sum()) == 1).all()
    meta = result.metadata
    assert meta["without_mask"].value == 1 and meta["studies"].value == 2
    assert [k for k in meta if k.startswith("heatmap_")] == ["heatmap_0"] and "data:image/png;base64" in meta["heatmap_0"].value
