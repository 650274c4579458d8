"""A model folder as `linkcare train` writes it: each model kind as plain JSON (never pickled),
metrics.json, curves.json and model_card.md; and a model read back only after its checksum (from
the folder's manifest) and its checks pass."""

from __future__ import annotations

import json
from pathlib import Path

from linkcare.config import Config
from linkcare.errors import ConfigError
from linkcare.io.checksum import check_written_by
from linkcare.risk.card import model_card
from linkcare.risk.curves import write_curves
from linkcare.risk.model import RiskModel
from linkcare.risk.training import Trained


def write_models(folder: Path, config: Config, trained: Trained) -> None:
    """Write every fitted model, metrics.json, curves.json and model_card.md into `folder`."""
    for kind, model in trained.models.items():
        (folder / f"{kind}.json").write_text(json.dumps(model.to_json()) + "\n", encoding="utf-8")
    (folder / "metrics.json").write_text(json.dumps(trained.metrics, indent=2) + "\n", encoding="utf-8")
    write_curves(folder, trained.curves, trained.metrics["evaluation"])
    (folder / "model_card.md").write_text(model_card(config, trained.metrics, trained.models[trained.default_model]),
                                          encoding="utf-8")


def load_model(folder: Path, kind: str | None = None) -> RiskModel:
    """Return a risk model that `linkcare train` wrote into `folder` (`kind`, or the folder's default when
    None or "auto"), refusing any file whose checksum does not match the folder's manifest or that is not
    a well-formed linkcare model."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{manifest_path}: not found; --model must be a folder written by `linkcare train`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{manifest_path}: cannot be read as a linkcare model manifest") from None
    models = manifest.get("models") if isinstance(manifest, dict) else None
    if not isinstance(models, dict) or manifest.get("command") != "train":
        raise ConfigError(f"{manifest_path}: not the manifest of a model folder written by `linkcare train`")
    kind = str(manifest.get("default_model")) if kind in (None, "auto") else kind
    entry = models.get(kind)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "/" in entry["file"]:
        raise ConfigError(f"{manifest_path}: lists no {kind} model; retrain with `linkcare train`")
    path = folder / entry["file"]
    try:
        raw = path.read_bytes()
    except OSError:
        raise ConfigError(f"{path}: cannot be read; retrain with `linkcare train`") from None
    check_written_by(path, raw, entry.get("sha256"), manifest_path, "train", "retrain")
    try:
        return RiskModel.from_json(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{path}: not JSON; retrain with `linkcare train`") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: refused: {exc}") from None


__all__ = ["load_model", "write_models"]
