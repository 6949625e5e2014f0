"""Shards of the archive: every study belongs to one by a stable hash of its pseudonymous id.

Shards run in parallel as separate runs (multiprocess here, one pod per shard with dagster-k8s),
or together in one run over a partition range.
"""

import dagster as dg

N_SHARDS = 8
SHARD_KEYS = [f"shard-{i:02d}" for i in range(N_SHARDS)]
SHARDS = dg.StaticPartitionsDefinition(SHARD_KEYS)
# One run may process a range of shards (the CLI's --partition-range needs single-run backfills).
SINGLE_RUN = dg.BackfillPolicy.single_run()
