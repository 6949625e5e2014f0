"""Where each step runs on a cluster: the Celery queue named by its `dagster-celery/queue` op tag.

`cpu`: ingest, reports, pairs and every check. `gpu`: segmentation (TotalSegmentator), training, the
evaluation's embeddings and study_embeddings. A local run ignores these tags; launch/cluster.py sends steps to Celery workers by them.
"""

QUEUE_TAG = "dagster-celery/queue"
CPU = {QUEUE_TAG: "cpu"}
GPU = {QUEUE_TAG: "gpu"}
