"""The match model: Fellegi-Sunter with several levels per field, trained by EM on counts of
distinct comparison patterns, so training cost does not grow with the number of pairs.

u (the chance of each level among non-matching pairs) comes from a seeded random sample of node
pairs; m (among matching pairs) from EM, run once per blocking pass with that pass's own key
fields left out (they agree by construction there), and averaged; the prior (the chance that two
random nodes match) from the candidate pairs. Missing values are level 0 and carry no evidence.
A model is additive on the log2-odds scale: an intercept plus a weight per field and level,
plus, for term-frequency fields, an adjustment for how rare the agreeing value is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from linkcare import __version__
from linkcare.config import Comparison
from linkcare.errors import ConfigError
from linkcare.io.checksum import check_written_by

MODEL_FORMAT = "linkcare-linkage-model"
#: Up to this many possible patterns, a dense array indexed by pattern code (of counts, of weights)
#: is cheaper than a table of the patterns seen.
DENSE_PATTERNS = 1 << 22
PROB_FLOOR = 1e-9


class PatternCodec:
    """Packs a row of comparison levels into one integer, so a pair costs 4 bytes rather than one
    byte per field, and patterns are counted with 1-D operations."""

    def __init__(self, sizes: list[int]):
        self.sizes = np.array(sizes, dtype=np.int64)
        self.mult = np.cumprod(np.r_[1, self.sizes[::-1][:-1]])[::-1].astype(np.int64)
        self.space = int(np.prod(self.sizes.astype(np.float64)))
        self.dtype = np.int32 if self.space < 2**31 else np.int64

    def encode(self, levels: np.ndarray) -> np.ndarray:
        return (levels.astype(np.int64) * self.mult).sum(axis=1).astype(self.dtype)

    def level(self, codes: np.ndarray, j: int) -> np.ndarray:
        return ((codes.astype(np.int64) // self.mult[j]) % self.sizes[j]).astype(np.int8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        out = np.empty((codes.size, self.sizes.size), dtype=np.int8)
        for j in range(self.sizes.size):
            out[:, j] = self.level(codes, j)
        return out


class PatternCounts:
    """Counts of distinct comparison patterns (rows of levels), kept by their packed codes."""

    def __init__(self, codec: PatternCodec):
        self.codec = codec
        self.counts: dict[int, float] = {}
        # With few possible patterns, a dense array counted by bincount is the cheapest tally.
        self.dense = np.zeros(codec.space) if codec.space <= DENSE_PATTERNS else None

    def add(self, levels: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Count each row of levels, once or with a weight (the record pairs a node pair stands for)."""
        self.add_codes(self.codec.encode(levels), weights)

    def add_codes(self, codes: np.ndarray, weights: np.ndarray | None = None) -> None:
        if codes.size == 0:
            return
        if self.dense is not None:
            self.dense += np.bincount(codes, weights=weights, minlength=self.dense.size)
            return
        unique, inverse = np.unique(codes, return_inverse=True)
        counts = np.bincount(inverse.ravel(), weights=weights, minlength=unique.size)
        for code, c in zip(unique.tolist(), counts.tolist(), strict=True):
            self.counts[code] = self.counts.get(code, 0.0) + c

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (patterns × fields levels, counts), in a fixed order."""
        if self.dense is not None:
            keys = np.nonzero(self.dense)[0]
            return self.codec.decode(keys), self.dense[keys].astype(np.float64)
        if not self.counts:
            return np.zeros((0, self.codec.sizes.size), dtype=np.int8), np.zeros(0)
        keys = np.array(sorted(self.counts), dtype=np.int64)
        return self.codec.decode(keys), np.array([self.counts[k] for k in keys.tolist()], dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.dense.sum()) if self.dense is not None else sum(self.counts.values())


def log_likelihoods(levels: np.ndarray, probs: list[np.ndarray], use: np.ndarray) -> np.ndarray:
    out = np.zeros(levels.shape[0])
    for j, p in enumerate(probs):
        if not use[j]:
            continue
        lv = levels[:, j]
        contrib = np.log(np.maximum(p[lv], PROB_FLOOR))
        out += np.where(lv > 0, contrib, 0.0)
    return out


def default_m(k: int, parts: list[tuple[int, int]] | None = None) -> np.ndarray:
    """A starting m over k levels: most matches agree exactly, fewer at each worse level (in each of
    `parts`, default all the present levels)."""
    m = np.zeros(k)
    for start, stop in parts if parts is not None else [(1, k)]:
        inner = np.array([0.5 ** i for i in range(stop - start)])
        inner[0] = 8.0
        m[start:stop] = inner / inner.sum()
    return m


def normalised(counts: np.ndarray, parts: list[tuple[int, int]]) -> np.ndarray | None:
    """Return `counts` (per level) as a distribution over each part of the levels (level 0 at 0),
    or None if a part holds nothing."""
    out = np.zeros(counts.size)
    for start, stop in parts:
        total = counts[start:stop].sum()
        if not total > 0:
            return None
        out[start:stop] = counts[start:stop] / total
    return out


def fit_m_em(levels: np.ndarray, counts: np.ndarray, u: list[np.ndarray], use: np.ndarray,
             m_start: list[np.ndarray], prior_start: float = 0.1, max_iter: int = 200,
             tol: float = 1e-6, pseudo_count: float = 1.0,
             parts: list[list[tuple[int, int]]] | None = None) -> tuple[list[np.ndarray], float, int]:
    """Return m per field, the share of matches, and the iterations EM took, with u held fixed.

    m is a distribution over each of a field's `parts` (default: all its present levels; see
    linkcare.config.Comparison.parts).

    Fields where `use` is False are left out of the likelihood (for example a blocking key).
    Each level gets `pseudo_count` matching pairs before the data, so a level EM never sees among
    matches (a swapped day and month, say) gets a small m rather than none, which would make it
    impossible evidence against a match.
    """
    m = [x.copy() for x in m_start]
    lam = prior_start
    log_u = log_likelihoods(levels, u, use)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        log_m = log_likelihoods(levels, m, use)
        a = np.log(lam) + log_m
        b = np.log1p(-lam) + log_u
        w = 1.0 / (1.0 + np.exp(np.clip(b - a, -700, 700)))
        wc = w * counts
        new_m = []
        for j, old in enumerate(m):
            if not use[j]:
                new_m.append(old)
                continue
            by_level = np.bincount(levels[:, j], weights=wc, minlength=old.size) + pseudo_count
            by_level[0] = 0.0
            fresh = normalised(by_level, parts[j] if parts is not None else [(1, old.size)])
            new_m.append(fresh if fresh is not None else old)
        new_lam = float(np.clip(wc.sum() / counts.sum(), 1e-12, 1 - 1e-12))
        change = max(abs(new_lam - lam), *(np.abs(a_ - b_).max() for a_, b_ in zip(new_m, m, strict=True)))
        m, lam = new_m, new_lam
        if change < tol:
            break
    return m, lam, iterations


@dataclass
class MatchModel:
    """An additive log2-odds match model over the configured comparisons."""

    comparisons: list[Comparison]
    intercept: float  # log2 odds that two random nodes match
    weights: list[np.ndarray]  # per field, per level: log2 Bayes factor (0 for missing)
    m: list[np.ndarray] | None = None
    u: list[np.ndarray] | None = None
    trained_by: str = "fellegi_sunter"
    training: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_m_u(cls, comparisons: list[Comparison], m: list[np.ndarray], u: list[np.ndarray], prior: float,
                 trained_by: str = "fellegi_sunter", training: dict[str, Any] | None = None) -> MatchModel:
        weights = []
        for mj, uj in zip(m, u, strict=True):
            w = np.log2(np.maximum(mj, PROB_FLOOR) / np.maximum(uj, PROB_FLOOR))
            w[0] = 0.0
            weights.append(w)
        intercept = float(np.log2(prior / (1.0 - prior)))
        return cls(comparisons, intercept, weights, m, u, trained_by, training or {})

    @property
    def prior(self) -> float:
        return float(1.0 / (1.0 + 2.0 ** -self.intercept))

    def pattern_weights(self, levels: np.ndarray) -> np.ndarray:
        """Return the match weight (log2 odds) of each row of levels, before term frequencies."""
        out = np.full(levels.shape[0], self.intercept)
        for j, w in enumerate(self.weights):
            out += w[levels[:, j]]
        return out

    def to_json(self) -> dict[str, Any]:
        fields = []
        for j, c in enumerate(self.comparisons):
            entry: dict[str, Any] = {
                "field": c.field, "method": c.method, "levels": list(c.levels),
                "term_frequency": c.term_frequency, "given": c.given, "level_names": c.level_names,
                "weights": [float(x) for x in self.weights[j]],
            }
            if self.m is not None and self.u is not None:
                entry["m"] = [float(x) for x in self.m[j]]
                entry["u"] = [float(x) for x in self.u[j]]
            fields.append(entry)
        return {"format": MODEL_FORMAT, "format_version": 1, "linkcare_version": __version__,
                "trained_by": self.trained_by, "prior": self.prior, "intercept": self.intercept,
                "fields": fields, "training": self.training}

    def save(self, path: Path) -> None:
        from linkcare.io.atomic import atomic_path

        with atomic_path(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path, comparisons: list[Comparison]) -> MatchModel:
        """Return a saved model, refusing one that does not fit the config's comparisons."""
        try:
            raw = Path(path).read_bytes()
            data = json.loads(raw.decode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the model ({exc.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"{path}: not a linkcare linkage model (not JSON)") from None
        if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
            raise ConfigError(f"{path}: not a linkcare linkage model (no format {MODEL_FORMAT!r})")
        saved = [(f.get("field"), f.get("method"), tuple(f.get("levels", ())), f.get("given"))
                 for f in data.get("fields", [])]
        wanted = [(c.field, c.method, tuple(c.levels), c.given) for c in comparisons]
        if saved != wanted:
            raise ConfigError(f"{path}: the model was trained on other comparisons than the config's "
                              "[[linkage.comparisons]]; retrain without --model")
        weights = []
        for f, c in zip(data["fields"], comparisons, strict=True):
            w = np.asarray(f["weights"], dtype=np.float64)
            if w.size != c.n_levels or not np.isfinite(w).all():
                raise ConfigError(f"{path}: field {c.field}: the model's weights do not fit its levels")
            weights.append(w)
        m = [np.asarray(f["m"]) for f in data["fields"]] if all("m" in f for f in data["fields"]) else None
        u = [np.asarray(f["u"]) for f in data["fields"]] if all("u" in f for f in data["fields"]) else None
        model = cls(list(comparisons), float(data["intercept"]), weights, m, u, str(data.get("trained_by")),
                    dict(data.get("training", {})))
        # Only a model written by `linkcare link` is used: the manifest beside it holds its checksum.
        manifest_path = Path(path).parent / "manifest.json"
        try:
            expected = json.loads(manifest_path.read_text(encoding="utf-8"))["model"]["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{path}: no manifest.json of `linkcare link` beside it lists this model; reuse the "
                              "model.json of a link output folder, as written") from None
        check_written_by(Path(path), raw, expected, manifest_path, "link", "retrain without --model")
        return model
