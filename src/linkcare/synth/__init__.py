"""Synthetic sites: realistic pseudonymised extracts with the truth kept apart."""

from linkcare.synth.options import ErrorRates, MonthlyRates, SynthOptions
from linkcare.synth.site import (
    MonthsSummary,
    SynthSummary,
    extract_file,
    make_site,
    site_config,
    synth_key,
    write_months,
    write_site,
)

__all__ = ["ErrorRates", "MonthlyRates", "MonthsSummary", "SynthOptions", "SynthSummary", "extract_file", "make_site",
           "site_config", "synth_key", "write_months", "write_site"]
