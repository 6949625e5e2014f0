"""Domain logic of ct-glip: DICOM ingest, resampling, segmentation, report rules, pair mining.

Nothing in this package imports dagster; the thin Dagster layer lives in `assets/`.
"""
