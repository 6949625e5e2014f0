"""Launchers: the processes that run the one `Definitions` of `assets/`, apart from the definitions themselves.

- `launch.run_all`: `make run`, the whole graph (or up to a group) as Dagster runs in one process;
- `launch.ui`: `make ui`, `dagster dev` on loopback, with the URL printed once the UI answers;
- `launch.cli_env`: the start-up hook (`ct_glip_dagster.pth` in .venv) that points the `dagster` CLI at the project;
- `launch.train_entry`: the trainer's process, started by the training assets through Dagster Pipes (or torchrun);
- `launch.cluster`: the cluster's code location, the same Definitions with the Celery executor and one job per stage.

`assets/` never imports from here (tests/test_definitions.py): what Dagster loads stays free of how it is started.
This package's `__init__` must stay empty of imports: the start-up hook imports `launch.cli_env` in every Python
of the venv.
"""
