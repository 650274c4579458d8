"""`linkcare train`: fit the risk models on a cohort, evaluate them on a later period, and write the
model folder (models, metrics.json, curves.json, model_card.md, risk_report.html, manifest.json)
whole or not at all."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linkcare.config import Config
from linkcare.io.atomic import atomic_dir, output_lock
from linkcare.io.checksum import file_sha256
from linkcare.io.manifest import write_manifest
from linkcare.io.modes import modes_for
from linkcare.log import get_logger, peak_mib
from linkcare.report.risk_report import REPORT_NAME, Inputs, write_train_report
from linkcare.risk.features import GROUPS
from linkcare.risk.store import write_models
from linkcare.risk.training import fit_models

log = get_logger("risk")


@dataclass(frozen=True)
class TrainResult:
    """What `linkcare train` did; holds no record values."""

    out: Path
    fit_index: dt.date
    test_index: dt.date
    horizon_days: int
    windows: tuple[int, ...]
    default_model: str
    metrics: dict[str, Any]
    seconds: float
    peak_mib: float


def train_models(config: Config, cohort_dir: Path, out: Path, as_of: dt.date | None = None,
                 horizon: int | None = None) -> TrainResult:
    """Fit both risk models, evaluate them on the later period, and write them with their metrics
    and model card into `out`, whole or not at all."""
    with output_lock(Path(out)), atomic_dir(Path(out), modes_for(config.output.mode)) as tmp:
        result = train_into(tmp, config, cohort_dir, as_of, horizon)
    return dataclasses.replace(result, out=Path(out))


def train_into(folder: Path, config: Config, cohort_dir: Path, as_of: dt.date | None = None,
               horizon: int | None = None) -> TrainResult:
    """Fit and evaluate the models and write the model folder into an existing (temporary) `folder`."""
    started = time.perf_counter()
    trained = fit_models(config, cohort_dir, as_of, horizon)
    write_models(folder, config, trained)
    inputs = Inputs(config, Path(cohort_dir).name, file_sha256(Path(cohort_dir) / "events.parquet"))
    log.info("writing %s…", REPORT_NAME)
    write_train_report(folder / REPORT_NAME, inputs, trained.scored, trained.metrics, trained.curves)
    used = trained.models[trained.default_model].features
    write_manifest(folder, "train", config, {
        "cohort": {"folder": inputs.cohort_folder, "events_sha256": inputs.events_sha256},
        "default_model": trained.default_model,
        "models": {kind: {"file": f"{kind}.json", "sha256": file_sha256(folder / f"{kind}.json")}
                   for kind in trained.models},
        "feature_groups": [g for g in GROUPS if any(f.group == g for f in used)],
    })
    return TrainResult(folder, trained.fit_index, trained.test_index, trained.horizon_days, trained.windows,
                       trained.default_model, trained.metrics, time.perf_counter() - started, peak_mib())


__all__ = ["TrainResult", "train_into", "train_models"]
