"""The Spark session a run uses: the config's `[engine]` table first, then the Spark environment.

- `[engine] master` sets the master. Without it the environment decides: under `spark-submit` (or
  in a Databricks job or notebook) the session that is already there is used as it is; otherwise
  PySpark starts a local JVM, whose master defaults to `local[*]` (or spark-defaults.conf's).
- `[engine.spark]` settings are applied to the session (a session that is already running takes
  only its runtime settings, as Spark does).
- A JVM linkcare starts itself runs the Python workers with this interpreter and logs nothing
  (a failing task's log lines can quote the row it failed on); with -v it logs warnings.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linkcare.config import Engine
from linkcare.log import get_logger
from linkcare.spark import require_pyspark

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
#: Settings every run needs: dates and times in UTC, Arrow between the JVM and Python.
DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    # Each batch handed to the stage functions is a polars frame: larger ones cost less per row.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
}


def spark_session(engine: Engine) -> tuple[SparkSession, bool]:
    """Return the Spark session to run on, and whether linkcare started it (and so should stop it)."""
    require_pyspark()
    from pyspark.sql import SparkSession

    settings = dict(DEFAULTS)
    starting = SparkSession.getActiveSession() is None and "PYSPARK_GATEWAY_PORT" not in os.environ
    if starting:
        # PySpark starts its Python workers with $PYSPARK_PYTHON: this interpreter, with linkcare's packages.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        settings["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}"
    settings.update(engine.spark)
    builder: Any = SparkSession.builder.appName("linkcare link")
    if engine.master:
        builder = builder.master(engine.master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if starting:
        # A failing task's log lines can quote the row it failed on, so Spark logs nothing unless
        # asked (-v): the failure itself still stops the run with an error.
        spark.sparkContext.setLogLevel("WARN" if get_logger("link").isEnabledFor(logging.DEBUG) else "OFF")
    if engine.checkpoint_dir:
        spark.sparkContext.setCheckpointDir(engine.checkpoint_dir)
    return spark, starting


def _peak_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


def jvm_memory(spark: SparkSession) -> dict[str, float]:
    """Return the peak resident memory (MiB) of the Spark driver JVM where the system shows it (Linux,
    the JVM on this machine; in local mode it runs the executors too), else {}. Python workers come
    and go, so their peaks are not known here (bench/bench_spark.py samples them)."""
    try:
        pid = int(spark.sparkContext._jvm.ProcessHandle.current().pid())  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no JVM handle (Spark Connect): nothing to measure
        return {}
    jvm = _peak_mib(pid)
    return {} if jvm is None else {"jvm_peak_mib": round(jvm, 1)}


__all__ = ["DEFAULTS", "jvm_memory", "spark_session"]
