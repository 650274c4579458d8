"""The cohort dataset: the people linkage found and their events, as `link` writes them and the
commands after it read them.

- persons: each record's person and each person's consolidated demographics, from the per-node
  decisions of the local engine;
- lineage: person IDs (keyed hashes) and carrying them over from a previous run;
- events: what each kind of extract's rows mean as events;
- dataset: reading a cohort folder back;
- demographics and equity: what demographic fields mean, and the groups linkage is reported by.
"""
