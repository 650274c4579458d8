"""Synthetic sites: realistic pseudonymised extracts with the truth kept apart."""

from linkcare.synth.options import ErrorRates, SynthOptions
from linkcare.synth.site import SynthSummary, make_site, site_config, synth_key, write_site

__all__ = ["ErrorRates", "SynthOptions", "SynthSummary", "make_site", "site_config", "synth_key", "write_site"]
