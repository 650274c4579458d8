"""Run one linker on one benchmark case in a child process, and score what it wrote.

`run_linkcare`, `run_splink` and `run_ecm` each start their tool as a child (bench/measure.py
run_child: wall clock and peak RSS), one at a time, note the 1-minute load average when the child
started, and score its clusters against the truth with bench/linkage_metrics.py. A linkcare run that
wrote attachments.parquet also gets its attach calibration (bench/attach_calibration.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from attach_calibration import attach_calibration
from linkage_metrics import PairScores, pairwise_scores
from measure import ChildRun, run_child

BENCH = Path(__file__).resolve().parent


@dataclass
class ToolRun:
    """One tool on one scenario: status, accuracy, time and memory."""

    scenario: str
    tool: str
    variant: str
    status: str  # ok | failed | did not finish | skipped
    seconds: float | None = None
    peak_mib: float | None = None
    scores: dict[str, Any] | None = None
    focus_scores: dict[str, Any] | None = None
    tool_reported: dict[str, Any] | None = None  # the tool's own figures (linkcare evaluate, Splink stages)
    load_before: float | None = None  # 1-minute load average when the child started
    note: str = ""
    log: str | None = None
    attach: dict[str, Any] | None = None  # linkcare's attach calibration (attach_calibration.py)

    @property
    def f1(self) -> float | None:
        return None if self.scores is None else float(self.scores["f1"])

    @property
    def precision(self) -> float | None:
        return None if self.scores is None else float(self.scores["precision"])

    @property
    def focus_f1(self) -> float | None:
        return None if self.focus_scores is None else float(self.focus_scores["f1"])


@dataclass
class Scenario:
    name: str
    description: str
    runs: list[ToolRun] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """What every tool run of one case shares: where it runs, the truth and the limits."""

    scenario: str
    work: Path
    truth: pl.DataFrame
    truth_path: Path
    focus: pl.DataFrame | None
    timeout: float | None


def _measured(cmd: list[str], log: Path, timeout: float | None) -> tuple[ChildRun, float]:
    load = os.getloadavg()[0]
    print(f"  running: {' '.join(str(c) for c in cmd[1:])}", flush=True)
    return run_child(cmd, timeout=timeout, log=log), load


def _failed(run: ChildRun, scenario: str, tool: str, variant: str, load: float) -> ToolRun:
    status = "did not finish" if run.timed_out else "failed"
    if run.timed_out:
        note = f"killed at the {run.seconds:.0f} s time limit"
    else:
        tail = run.tail(40).splitlines()
        errors = [line.strip() for line in tail if "Error" in line or "error" in line]
        note = (f"exit code {run.exit_code}: {errors[-1] if errors else 'no error line'}; see {run.log}\n"
                + "\n".join(tail[-8:]))
    print(f"  {tool} {variant}: {status} ({note.splitlines()[0]})", flush=True)
    return ToolRun(scenario, tool, variant, status, round(run.seconds, 2), round(run.peak_mib, 1),
                   load_before=round(load, 2), note=note, log=str(run.log))


def _scores(clusters: pl.DataFrame, truth: pl.DataFrame, focus: pl.DataFrame | None) -> tuple[PairScores,
                                                                                                  PairScores | None]:
    return pairwise_scores(clusters, truth), (pairwise_scores(clusters, truth, focus) if focus is not None else None)


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def run_linkcare(case: Case, variant: str, config: Path, name: str = "linkcare") -> ToolRun:
    """Run `linkcare link` in a child; score its person_index.parquet and its attachments."""
    out = _fresh(case.work / name)
    cmd = [sys.executable, "-m", "linkcare", "-q", "link", str(config), "--out", str(out)]
    run, load = _measured(cmd, case.work / f"{name}.log", case.timeout)
    if not run.ok:
        return _failed(run, case.scenario, "linkcare", variant, load)
    index = pl.read_parquet(out / "person_index.parquet")
    clusters = index.select("source", "record_id", pl.col("person_id").alias("cluster"))
    overall, focused = _scores(clusters, case.truth, case.focus)
    reported = linkcare_evaluate(out, case.truth_path, case.work / f"{name}_evaluate.log")
    result = ToolRun(case.scenario, "linkcare", variant, "ok", round(run.seconds, 2), round(run.peak_mib, 1),
                     overall.as_dict(), focused.as_dict() if focused else None, reported, round(load, 2),
                     log=str(run.log), attach=attach_calibration(out, case.truth))
    print_run(result)
    return result


def linkcare_evaluate(out: Path, truth_path: Path, log: Path) -> dict[str, Any] | None:
    """Return `linkcare evaluate links --json` for a link output (a cross-check, not timed), or None."""
    cmd = [sys.executable, "-m", "linkcare", "-q", "evaluate", "links", str(out), "--truth", str(truth_path),
           "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return None
    try:
        parsed = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def run_splink(case: Case, variant: str, config: Path, extra: list[str], name: str = "splink") -> ToolRun:
    """Run bench/splink_runner.py on a linkcare config in a child; score its clusters."""
    out = _fresh(case.work / name)
    cmd = [sys.executable, str(BENCH / "splink_runner.py"), str(config), "--out", str(out), *extra]
    run, load = _measured(cmd, case.work / f"{name}.log", case.timeout)
    if not run.ok:
        return _failed(run, case.scenario, "splink", variant, load)
    clusters = pl.read_parquet(out / "clusters.parquet")
    overall, focused = _scores(clusters, case.truth, case.focus)
    summary = json.loads((out / "splink.json").read_text())
    reported = {k: summary[k] for k in ("splink_version", "duckdb_version", "stage_seconds", "links", "prior")}
    reported["options"] = extra
    reported["config"] = str(config)
    shutil.rmtree(out / "duckdb_tmp", ignore_errors=True)
    result = ToolRun(case.scenario, "splink", variant, "ok", round(run.seconds, 2), round(run.peak_mib, 1),
                     overall.as_dict(), focused.as_dict() if focused else None, reported, round(load, 2),
                     log=str(run.log))
    print_run(result)
    return result


def run_ecm(case: Case, variant: str, config: Path) -> ToolRun:
    """Run bench/ecm_runner.py (recordlinkage full index + ECM) in a child with a time limit; score it."""
    out = _fresh(case.work / "ecm")
    cmd = [sys.executable, str(BENCH / "ecm_runner.py"), str(config), "--out", str(out)]
    run, load = _measured(cmd, case.work / "ecm.log", case.timeout)
    if not run.ok:
        return _failed(run, case.scenario, "recordlinkage ECM", variant, load)
    overall, _ = _scores(pl.read_parquet(out / "clusters.parquet"), case.truth, None)
    reported = json.loads((out / "ecm.json").read_text())
    result = ToolRun(case.scenario, "recordlinkage ECM", variant, "ok", round(run.seconds, 2),
                     round(run.peak_mib, 1), overall.as_dict(), None, reported, round(load, 2), log=str(run.log))
    print_run(result)
    return result


def print_run(r: ToolRun) -> None:
    """Print one finished run's figures as it ends, and check linkcare's F1 against its own evaluate."""
    s = r.scores or {}
    focus = f", focus F1 {r.focus_f1:.4f}" if r.focus_f1 is not None else ""
    print(f"  {r.tool} {r.variant}: P {s.get('precision', 0):.4f} R {s.get('recall', 0):.4f} F1 {r.f1:.4f}"
          f"{focus}, {r.seconds:.1f} s, peak {r.peak_mib:,.0f} MiB", flush=True)
    if r.tool == "linkcare":
        own = (r.tool_reported or {}).get("all records", {}).get("f1")
        if own is None:
            print("    (linkcare evaluate links gave no F1 to cross-check)")
        elif abs(float(own) - float(r.f1 or 0)) > 1e-6:
            print(f"    WARNING: linkcare evaluate links says F1 {float(own):.6f}, this harness {r.f1:.6f}")


def pick(sc: Scenario, tool: str, variant: str) -> ToolRun | None:
    """Return the successful run of a tool and variant in a scenario, or None."""
    for r in sc.runs:
        if r.tool == tool and r.variant == variant and r.status == "ok":
            return r
    return None


def target(name: str, value: float | None, op: str, bound: float | None,
           splink: float | None = None) -> dict[str, Any]:
    """Return a target's verdict (met True/False, None when not measured); `splink` is Splink's own figure
    from the same run, printed beside it."""
    if value is None or bound is None:
        met = None
    else:
        met = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]
    return {"target": name, "value": value, "bound": None if bound is None else round(bound, 6), "met": met,
            "splink": splink}
