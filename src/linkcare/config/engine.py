"""The `[engine]` table of a site config: where `linkcare link --engine spark` runs."""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from linkcare.config.model import Engine
from linkcare.config.toml import KeyProblems, expect_text, key_path, open_table, type_name

ENGINE_KEYS = ("master", "checkpoint_dir", "spark")


def check_engine(value: Any, base: Path, p: KeyProblems) -> Engine:
    value = open_table(value, "engine", ENGINE_KEYS, p)
    if value is None:
        return Engine()
    out: dict[str, Any] = {}
    if "master" in value:
        out["master"] = expect_text(value["master"], "engine.master", 'master = "local[*]"', p)
    if "checkpoint_dir" in value:
        where = expect_text(value["checkpoint_dir"], "engine.checkpoint_dir", 'checkpoint_dir = "spark-checkpoints"', p)
        # A URI (hdfs://, dbfs:/, s3a://) is kept as written; a plain path is relative to the config's folder.
        if where is not None:
            out["checkpoint_dir"] = where if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", where) else str(base / where)
    if "spark" in value:
        settings = value["spark"]
        example = '[engine.spark] "spark.executor.memory" = "4g"'
        if not isinstance(settings, dict):
            p.add("engine.spark", f"must be a table of Spark settings, not {type_name(settings)}; e.g. {example}")
        else:
            checked: dict[str, str] = {}
            for name, setting in settings.items():
                key = key_path("engine.spark", name)
                if not name.startswith("spark."):
                    p.add(key, f"is not a Spark setting (they start with \"spark.\"); e.g. {example}")
                elif name == "spark.master":
                    p.add(key, 'set the master with [engine] master = "..." instead')
                elif isinstance(setting, bool):
                    checked[name] = "true" if setting else "false"
                elif isinstance(setting, str | int | float):
                    checked[name] = str(setting)
                else:
                    p.add(key, f"must be a string, number or boolean, not {type_name(setting)}; e.g. {example}")
            out["spark"] = MappingProxyType(checked)
    return Engine(**{k: v for k, v in out.items() if v is not None})


