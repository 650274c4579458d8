"""Benchmark `linkcare link --engine spark` beside the local engine on the 1,000,000-person synthetic site
(issue 7), on this machine: Spark in local mode (`local[*]`, a 4 GB driver through PYSPARK_SUBMIT_ARGS,
Spark's default settings otherwise).

How the numbers are obtained: each engine runs as a child process, one after the other, on the same
site and config. Seconds are wall clock around the child (start to exit), JVM start included. Memory:

- local engine: the child's peak resident set size (os.wait4's ru_maxrss), as bench/bench_link.py.
- Spark: the child is the Python driver; Spark's JVM and the Python workers it forks are its
  descendants. Every 0.5 s this script reads the resident size (/proc/PID/status VmRSS) of every
  process in the child's tree and keeps, per kind (driver, JVM, Python workers), the largest seen,
  and the largest sum over the whole tree at one instant (shared pages of forked workers count
  once per process, so the sum overstates). The JVM's own peak (VmHWM, read by linkcare at the end
  of the run, in manifest.json) is reported too. (The driver's ru_maxrss in manifest.json is not:
  Linux keeps a process's high-water mark across exec, so a child started from this script
  starts with this script's resident size.)

Parity: the share of records with the same person_id under both engines, the people each found,
the largest difference of the models' m, u and weights, and pairwise F1 against the truth.

Results: a table on standard output and OUT/spark.json. The site is reused from bench_link.py's
data folder (written by `linkcare synth` if missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
from bench_link import machine
from linkage_metrics import pairwise_scores
from measure import run_child
from site_cases import SITE_SEED, site_truth, synth_site

SAMPLE_SECONDS = 0.5
PEOPLE = {"full": 1_000_000, "quick": 20_000}


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "PPid"):
                out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


def _tree(root: int) -> dict[int, str]:
    """Return every live process under `root` (itself included) with its kind: driver, jvm or worker."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _status(int(entry.name)).get("PPid")
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    kinds, queue = {root: "driver"}, [root]
    while queue:
        pid = queue.pop()
        for child in children.get(pid, []):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            kinds[child] = "jvm" if command.endswith("java") else "worker" if "python" in command else "other"
            queue.append(child)
    return kinds


class TreeSampler:
    """The largest resident memory seen per kind of process in a tree, and of the whole tree at once."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.total = 0.0

    def sample(self, root: int) -> None:
        total = 0.0
        for pid, kind in _tree(root).items():
            rss = _status(pid).get("VmRSS", 0) / 1024.0
            total += rss
            self.peaks[kind] = max(self.peaks.get(kind, 0.0), rss)
        self.total = max(self.total, total)


def run_spark_child(cmd: list[str], log: Path, timeout: float,
                    env: dict[str, str]) -> tuple[float, int | None, TreeSampler]:
    """Run the Spark child to completion (or the time limit), sampling its process tree; return its
    wall seconds, exit code (None when killed) and the sampled peaks."""
    import signal
    import subprocess

    sampler = TreeSampler()
    with open(log, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        next_sample = started
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            now = time.perf_counter()
            if now - started > timeout:
                os.killpg(proc.pid, signal.SIGKILL)  # the child's own process group, started above
                os.wait4(proc.pid, 0)
                return now - started, None, sampler
            if now >= next_sample:
                sampler.sample(proc.pid)
                next_sample = now + SAMPLE_SECONDS
            time.sleep(0.02)
    return time.perf_counter() - started, proc.returncode, sampler


def _model_difference(a: Path, b: Path) -> dict[str, float]:
    ma, mb = (json.loads((p / "model.json").read_text()) for p in (a, b))
    worst = {"m": 0.0, "u": 0.0, "weights": 0.0}
    for fa, fb in zip(ma["fields"], mb["fields"], strict=True):
        for key in worst:
            worst[key] = max(worst[key], *(abs(x - y) for x, y in zip(fa[key], fb[key], strict=True)))
    return {**{f"max_abs_diff_{k}": round(v, 6) for k, v in worst.items()},
            "prior_relative_diff": round(abs(ma["prior"] - mb["prior"]) / ma["prior"], 6)}


def _parity(local: Path, spark: Path, truth: pl.DataFrame) -> dict[str, Any]:
    a = pl.read_parquet(local / "person_index.parquet").select("source", "record_id", "person_id")
    b = pl.read_parquet(spark / "person_index.parquet").select("source", "record_id", "person_id")
    joined = a.join(b, on=["source", "record_id"], how="full", suffix="_spark", coalesce=True)
    same = joined.filter(pl.col("person_id") == pl.col("person_id_spark")).height
    people = {"local": a["person_id"].n_unique(), "spark": b["person_id"].n_unique()}
    # People found by one engine and not the other (same ID, same records) count as differing.
    groups = [frame.group_by("person_id").agg(pl.col("record_id").sort().str.join(",").alias("r"),
                                              pl.col("source").first()) for frame in (a, b)]
    differing = groups[0].join(groups[1], on=["person_id", "r"], how="anti").height
    scores = {name: pairwise_scores(frame.select("source", "record_id", pl.col("person_id").alias("cluster")),
                                    truth).as_dict() for name, frame in (("local", a), ("spark", b))}
    return {"records": joined.height, "records_same_person_id": same,
            "share_same_person_id": round(same / max(joined.height, 1), 8), "people": people,
            "local_people_not_found_by_spark": differing, **_model_difference(local, spark),
            "pairwise_f1": {k: v["f1"] for k, v in scores.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--quick", action="store_true", help="a site of 20,000 people: a smoke run")
    parser.add_argument("--timeout", type=float, default=5400.0, help="seconds before a child is killed")
    parser.add_argument("--driver-memory", default="4g",
                        help="Spark driver memory (local mode: all of Spark), unless PYSPARK_SUBMIT_ARGS is set")
    args = parser.parse_args()
    args.out = args.out.resolve()
    people = PEOPLE["quick" if args.quick else "full"]
    site = args.out / "data" / f"site_{people}_s{SITE_SEED}"
    config, _ = synth_site(site, people, SITE_SEED, args.timeout)
    truth = site_truth(config)
    work = args.out / "spark"
    work.mkdir(parents=True, exist_ok=True)
    outs = {engine: work / f"site_{people}_{engine}" for engine in ("local", "spark")}
    for path in outs.values():
        shutil.rmtree(path, ignore_errors=True)
    base = [sys.executable, "-m", "linkcare", "link", str(config)]
    print(f"[spark] {people:,} people, {truth.height:,} records; {os.cpu_count()} cores", flush=True)
    print("  running the local engine", flush=True)
    local = run_child([*base, "--out", str(outs["local"])], timeout=args.timeout, log=work / "local.log")
    print("  running the Spark engine (local[*])", flush=True)
    # The standard Spark environment sets the driver's memory (in local mode the executors share it):
    # Spark's default of 1 GB is meant for trying things out. -v keeps Spark's warnings in the log.
    env = {**os.environ, "PYSPARK_SUBMIT_ARGS": os.environ.get("PYSPARK_SUBMIT_ARGS",
                                                               f"--driver-memory {args.driver_memory} pyspark-shell")}
    spark_seconds, spark_exit, sampler = run_spark_child(
        [sys.executable, "-m", "linkcare", "-v", *base[3:], "--out", str(outs["spark"]), "--engine", "spark"],
        work / "spark.log", args.timeout, env)
    if not local.ok or spark_exit != 0:
        raise SystemExit(f"a run failed: local exit {local.exit_code}, Spark exit {spark_exit}; see {work}/*.log")
    manifest = {e: json.loads((outs[e] / "manifest.json").read_text()) for e in outs}
    engine = manifest["spark"]["engine"]
    result = {
        "ran_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "people": people, "records": truth.height,
        "config": str(config), "machine": machine(),
        "local": {"seconds": round(local.seconds, 1), "peak_mib": round(local.peak_mib, 1),
                  "stages": manifest["local"]["stages"]},
        "spark": {"seconds": round(spark_seconds, 1), "master": engine.get("master"),
                  "spark_version": engine.get("spark_version"),
                  "shuffle_partitions": engine.get("shuffle_partitions"),
                  "spark_submit_args": env["PYSPARK_SUBMIT_ARGS"],
                  "sampled_peak_mib": {k: round(v, 1) for k, v in sorted(sampler.peaks.items())},
                  "sampled_peak_total_mib": round(sampler.total, 1),
                  "jvm_peak_mib": engine.get("jvm_peak_mib"),
                  "stages": manifest["spark"]["stages"]},
        "parity": _parity(outs["local"], outs["spark"], truth),
        "how_measured": __doc__.split("How the numbers are obtained: ", 1)[1].split("\n\nParity", 1)[0],
    }
    path = args.out / ("spark_quick.json" if args.quick else "spark.json")
    path.write_text(json.dumps(result, indent=2))
    s, p = result["spark"], result["parity"]
    print(f"\n{'engine':<7} {'seconds':>8}  peak resident memory (MiB)")
    print(f"{'local':<7} {result['local']['seconds']:>8.1f}  {result['local']['peak_mib']:.0f} (ru_maxrss)")
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in s["sampled_peak_mib"].items())
    print(f"{'spark':<7} {s['seconds']:>8.1f}  {peaks}; whole tree {s['sampled_peak_total_mib']:.0f} (sampled)")
    print(f"  JVM VmHWM {s['jvm_peak_mib']} MiB ({s['master']}, Spark {s['spark_version']}, "
          f"{s['shuffle_partitions']} shuffle partitions, {s['spark_submit_args']})")
    print("  stages (s): " + ", ".join(f"{st['stage']} {st['seconds']:.0f} (local {lt['seconds']:.0f})"
                                         for st, lt in zip(s["stages"], result["local"]["stages"], strict=False)))
    print(f"  parity: {p['share_same_person_id']:.6%} of records with the same person_id "
          f"({p['records'] - p['records_same_person_id']:,} differ); people {p['people']['local']:,} local, "
          f"{p['people']['spark']:,} Spark; model max |diff| m {p['max_abs_diff_m']}, u {p['max_abs_diff_u']}, "
          f"weights {p['max_abs_diff_weights']}, prior {p['prior_relative_diff']:.2e} relative; pairwise F1 "
          f"{p['pairwise_f1']['local']:.6f} local, {p['pairwise_f1']['spark']:.6f} Spark")
    print(f"\nWrote {path}")


if __name__ == "__main__":
    main()
