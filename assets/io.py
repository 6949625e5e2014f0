"""A JSON IO manager for small asset values (checkpoint references), so downstream assets take them as inputs.

Values live at ``<data root>/assets/<asset>.json``: readable, diffable, never pickled.
"""

import json
from pathlib import Path

import dagster as dg

from pipeline.atomic import write_json
from pipeline.tables import data_root


class JsonIOManager(dg.ConfigurableIOManager):
    path: str = ""  # empty: the data root ($CTGLIP_DATA or ./data), resolved at run time

    def _file(self, key: dg.AssetKey) -> Path:
        return data_root(self.path or None) / "assets" / f"{'__'.join(key.path)}.json"

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        write_json(obj, self._file(context.asset_key))

    def load_input(self, context: dg.InputContext) -> dict:
        path = self._file(context.asset_key)
        if not path.is_file():
            raise dg.Failure(f"{context.asset_key.to_user_string()} has not been materialized (no {path}); materialize it first")
        return json.loads(path.read_text())
