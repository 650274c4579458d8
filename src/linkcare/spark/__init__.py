"""`linkcare link --engine spark`: the same linkage pipeline on Apache Spark.

PySpark is an optional extra (`pip install 'linkcare[spark]'`); nothing in this package imports it
until a Spark run starts, so the local engine never needs it.
"""

from __future__ import annotations

from linkcare.errors import ConfigError

INSTALL_HINT = "pip install 'linkcare[spark]'"


def require_pyspark() -> None:
    """Raise ConfigError saying how to install PySpark if it is not installed."""
    try:
        import pyspark  # noqa: F401 - only whether it imports
    except ImportError:
        raise ConfigError(f"--engine spark needs PySpark, which is not installed; install it with: {INSTALL_HINT} "
                          "(or use --engine local)") from None


__all__ = ["INSTALL_HINT", "require_pyspark"]
