"""Reading the package's data files. YAML is read with BaseLoader: every scalar stays a string, so a
term like `no` or `on` is never turned into a boolean."""

from __future__ import annotations

from importlib import resources

import yaml


def load(name: str, default=None):
    path = resources.files("pipeline.report").joinpath("data").joinpath(name)
    if not path.is_file():
        return default
    return yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
