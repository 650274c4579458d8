"""The site config: a TOML file describing the sources, how to link them and how to score risk.

`load_config` reads and checks it, collecting every problem, and returns frozen objects with every
path resolved and every default filled in (linkcare.config.model). Each table is checked by its own
module (sources, linkage, risk, engine), with the TOML helpers of linkcare.config.toml; the
comparison methods are a registry (linkcare.config.methods). The keys are documented in
docs/config.md.
"""

from linkcare.config.asof import AsOf, resolve_as_of, run_date
from linkcare.config.load import ConfigCheck, check_config, config_hash, load_config
from linkcare.config.methods import METHOD_NAMES, METHODS, ComparisonMethod
from linkcare.config.model import (
    CONFIG_VERSION,
    DEFAULT_TIERS,
    LINK_TYPES,
    MODELS,
    OUTPUT_MODES,
    RISK_MODELS,
    Comparison,
    Config,
    DeprivationLookup,
    Engine,
    FieldSpec,
    Linkage,
    Output,
    RiskSettings,
    SortedNeighbourhood,
    Source,
    Tier,
    Validation,
)

__all__ = [
    "CONFIG_VERSION",
    "AsOf",
    "resolve_as_of",
    "run_date",
    "DEFAULT_TIERS",
    "LINK_TYPES",
    "METHODS",
    "METHOD_NAMES",
    "MODELS",
    "OUTPUT_MODES",
    "RISK_MODELS",
    "Comparison",
    "ComparisonMethod",
    "Config",
    "ConfigCheck",
    "DeprivationLookup",
    "Engine",
    "FieldSpec",
    "Linkage",
    "Output",
    "RiskSettings",
    "SortedNeighbourhood",
    "Source",
    "Tier",
    "Validation",
    "check_config",
    "config_hash",
    "load_config",
]
