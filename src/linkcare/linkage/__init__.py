"""Linkage: standardise, reduce, link deterministically, block, compare, score, cluster."""
