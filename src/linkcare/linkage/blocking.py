"""Which pairs of nodes to compare: deterministic rules, then blocking passes.

Blocking is done per partition of the blocking key, so each join (or recordlinkage `Index`
call) stays small. Pairs come out in chunks of at most about `chunk_pairs`; a pair that an
earlier pass already produced is dropped, so each pair is compared once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from linkcare.config import Linkage
from linkcare.errors import DataError
from linkcare.linkage.prepare import dense_codes


def encode_fields(nodes: pl.DataFrame, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Return an integer code per node for each field (equal values, equal codes; -1 for missing)."""
    return {name: dense_codes(nodes[name])[0] for name in fields}


def source_codes(nodes: pl.DataFrame) -> np.ndarray:
    """Return an integer code for each node's source (sources in name order)."""
    return dense_codes(nodes["source"])[0]


def group_ids(columns: list[np.ndarray]) -> np.ndarray:
    """Return a dense group number per row for rows of non-negative integer codes."""
    if len(columns) == 1:
        return np.unique(columns[0], return_inverse=True)[1].ravel()
    sizes = [int(c.max()) + 1 if c.size else 1 for c in columns]
    if float(np.prod(np.array(sizes, dtype=np.float64))) < 2.0 ** 62:
        combined = np.zeros(columns[0].size, dtype=np.int64)
        for c, size in zip(columns, sizes, strict=True):
            combined = combined * size + c
        return np.unique(combined, return_inverse=True)[1].ravel()
    frame = pl.DataFrame({f"c{i}": c for i, c in enumerate(columns)})
    return (frame.select(pl.struct(pl.all()).rank("dense")).to_series().cast(pl.Int64) - 1).to_numpy()


def allowed(link_type: str, src_l: np.ndarray, src_r: np.ndarray) -> np.ndarray:
    """Return which pairs the link type allows: across sources, within them, or both."""
    if link_type == "link_only":
        return src_l != src_r
    if link_type == "dedupe_only":
        return src_l == src_r
    return np.ones(src_l.shape, dtype=bool)


def agree_on(codes: dict[str, np.ndarray], key: tuple[str, ...], left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Return which pairs agree, with no value missing, on every field of a key."""
    ok = np.ones(left.shape, dtype=bool)
    for f in key:
        a, b = codes[f][left], codes[f][right]
        ok &= (a == b) & (a >= 0)
    return ok


def deterministic_edges(codes: dict[str, np.ndarray], rules: tuple[tuple[str, ...], ...],
                        src: np.ndarray, link_type: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return edges (left, right, rule) joining every node to the first node that shares all of a
    rule's fields, with no value missing, and the position of that rule; together they link every
    group the rules define."""
    lefts, rights, which = [], [], []
    n = src.size
    for r, rule in enumerate(rules):
        present = np.ones(n, dtype=bool)
        for f in rule:
            present &= codes[f] >= 0
        idx = np.nonzero(present)[0]
        if idx.size == 0:
            continue
        keys = [codes[f][idx] for f in rule]
        if link_type == "dedupe_only":
            keys.append(src[idx])
        group = group_ids(keys)
        frame = pl.DataFrame({"node": idx, "group": group, "src": src[idx]}).sort("group", "node")
        # Each node joins the group's first node; under link_only, the first node of another source.
        frame = frame.with_columns(pl.col("node").first().over("group").alias("head"),
                                   pl.col("src").first().over("group").alias("head_src"))
        if link_type == "link_only":
            other = frame.filter(pl.col("src") != pl.col("head_src")).group_by("group").agg(
                pl.col("node").min().alias("other"))
            frame = frame.join(other, on="group", how="left").with_columns(
                pl.when(pl.col("src") != pl.col("head_src")).then(pl.col("head"))
                .otherwise(pl.col("other")).alias("head"))
        edges = frame.filter(pl.col("head").is_not_null() & (pl.col("head") != pl.col("node")))
        lefts.append(edges["head"].to_numpy())
        rights.append(edges["node"].to_numpy())
        which.append(np.full(edges.height, r, dtype=np.int8))
    if not lefts:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([], dtype=np.int8)
    return np.concatenate(lefts), np.concatenate(rights), np.concatenate(which)


@dataclass(frozen=True)
class BlockPlan:
    """The blocks of one pass: which nodes are in which block, and how many pairs they give.

    A sorted-neighbourhood pass has `window` > 0 and `rank`, the position of each node's value
    among the sorted distinct values: nodes of one block pair up when their ranks differ by at
    most window // 2.
    """

    key: tuple[str, ...]
    node: np.ndarray  # nodes with every key field present, sorted by block
    block: np.ndarray  # block of each of those nodes
    pairs: int  # candidate pairs the pass yields under the link type, before de-duplication
    window: int = 0
    rank: np.ndarray | None = None

    @property
    def label(self) -> str:
        if self.window:
            inside = f" within {'+'.join(self.key[1:])}" if len(self.key) > 1 else ""
            return f"sorted {self.key[0]} (window {self.window}){inside}"
        return "+".join(self.key)


def plan_pass(codes: dict[str, np.ndarray], key: tuple[str, ...], src: np.ndarray, link_type: str) -> BlockPlan:
    """Return the blocks of a pass and count its candidate pairs without forming them."""
    present = np.ones(src.size, dtype=bool)
    for f in key:
        present &= codes[f] >= 0
    idx = np.nonzero(present)[0]
    if idx.size == 0:
        return BlockPlan(key, idx, idx, 0)
    block = group_ids([codes[f][idx] for f in key])
    order = np.argsort(block, kind="stable")
    node, block = idx[order], block[order]
    frame = pl.DataFrame({"block": block, "src": src[node]})
    per = frame.group_by("block", "src").len()
    size = per.group_by("block").agg(pl.col("len").sum().alias("n"), (pl.col("len") ** 2).sum().alias("sq"))
    n = size["n"].cast(pl.Float64).to_numpy()
    sq = size["sq"].cast(pl.Float64).to_numpy()
    within = float(((sq - n) / 2).sum())
    across = float(((n * n - sq) / 2).sum())
    count = {"link_only": across, "dedupe_only": within, "link_and_dedupe": within + across}[link_type]
    return BlockPlan(key, node, block, int(count))


def plan_sorted(codes: dict[str, np.ndarray], field: str, window: int, block: tuple[str, ...], src: np.ndarray,
                link_type: str) -> BlockPlan:
    """Return a sorted-neighbourhood pass: ranks of `field` among its sorted distinct values, in
    blocks of `block`, and the number of pairs it yields."""
    key = (field, *block)
    present = np.ones(src.size, dtype=bool)
    for f in key:
        present &= codes[f] >= 0
    idx = np.nonzero(present)[0]
    if idx.size == 0:
        return BlockPlan(key, idx, idx, 0, window, idx)
    rank = np.unique(codes[field][idx], return_inverse=True)[1].ravel()
    blk = group_ids([codes[f][idx] for f in block]) if block else np.zeros(idx.size, dtype=np.int64)
    order = np.lexsort((rank, blk))
    node, blk, rank = idx[order], blk[order], rank[order]
    pairs = 0
    counts = pl.DataFrame({"b": blk, "r": rank, "s": src[node]}).group_by("b", "r", "s").len()
    half = window // 2
    for d in range(half + 1):
        other = counts.with_columns(pl.col("r") - d)
        joined = counts.join(other, on=["b", "r"], suffix="_o")
        a = joined["len"].cast(pl.Float64).to_numpy()
        n = a * joined["len_o"].cast(pl.Float64).to_numpy()
        same = (joined["s"] == joined["s_o"]).to_numpy()
        if d == 0:  # unordered pairs within the same value
            n = np.where(same, a * (a - 1), n) / 2
        total = {"link_only": n[~same].sum(), "dedupe_only": n[same].sum(), "link_and_dedupe": n.sum()}[link_type]
        pairs += int(total)
    return BlockPlan(key, node, blk, pairs, window, rank)


def plan_passes(codes: dict[str, np.ndarray], src: np.ndarray, linkage: Linkage) -> list[BlockPlan]:
    """Return the plan of every candidate pass of the config, blocking passes first, then the
    sorted-neighbourhood ones, each with its pair count under the link type."""
    plans = [plan_pass(codes, tuple(key), src, linkage.link_type) for key in linkage.blocking]
    plans += [plan_sorted(codes, sn.field, sn.window, sn.block, src, linkage.link_type)
              for sn in linkage.sorted_neighbourhood]
    return plans


def pass_config_key(plans: list[BlockPlan], i: int) -> str:
    """Return the config key of the i-th plan of plan_passes: linkage.blocking[k] or linkage.sorted_neighbourhood[k]."""
    n_blocking = sum(1 for p in plans if not p.window)
    return f"linkage.sorted_neighbourhood[{i - n_blocking}]" if plans[i].window else f"linkage.blocking[{i}]"


def check_pair_counts(plans: list[BlockPlan], max_pairs: int) -> None:
    """Stop with an error naming the pass if any pass would yield more pairs than allowed."""
    for i, plan in enumerate(plans):
        if plan.pairs <= max_pairs:
            continue
        if plan.window:
            raise DataError(
                f"{pass_config_key(plans, i)} ({plan.label}) would yield {plan.pairs:,} candidate "
                f"pairs, above linkage.max_pairs = {max_pairs:,}; add a block field, narrow the window or raise "
                "max_pairs")
        raise DataError(
            f"{pass_config_key(plans, i)} ({', '.join(plan.key)}) would yield {plan.pairs:,} candidate pairs, "
            f"above linkage.max_pairs = {max_pairs:,}; add a field to that blocking pass or raise max_pairs")


def _block_ranges(plan: BlockPlan, chunk_pairs: int) -> Iterator[tuple[int, int]]:
    """Yield [start, stop) row ranges of whole blocks holding about `chunk_pairs` pairs each."""
    starts = np.r_[0, np.nonzero(np.diff(plan.block))[0] + 1, plan.block.size]
    sizes = np.diff(starts).astype(np.float64)
    per_block = sizes * (plan.window if plan.window else (sizes - 1) / 2)
    cum = np.cumsum(per_block)
    chunk_of_block = (cum // max(chunk_pairs, 1)).astype(np.int64)
    edges = np.r_[0, np.nonzero(np.diff(chunk_of_block))[0] + 1, sizes.size]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        yield int(starts[a]), int(starts[b])


def _pairs_within_blocks(node: np.ndarray, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return every pair (smaller node, larger node) of rows sharing a block, rows sorted by block.

    Row i pairs with each later row of its block: counts[i] partners, laid out without forming the
    (block size)^2 grid that a self-join would build and then halve.
    """
    n = node.size
    if n < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.nonzero(np.diff(block))[0] + 1]
    ends = np.r_[starts[1:], n]
    end_of_row = np.repeat(ends, ends - starts)
    counts = end_of_row - np.arange(n) - 1
    total = int(counts.sum())
    first = np.repeat(np.arange(n), counts)
    # The k-th partner of row i is row i + 1 + k: k counts up from 0 within each run of `first`.
    offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    a, b = node[first], node[first + 1 + offset]
    return np.minimum(a, b), np.maximum(a, b)


def pairs_polars(plan: BlockPlan, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Return every pair (left < right) of nodes sharing a block, among rows [lo, hi) of a plan
    (for a sorted-neighbourhood pass: sharing a block with ranks at most window // 2 apart)."""
    if not plan.window:
        return _pairs_within_blocks(plan.node[lo:hi], plan.block[lo:hi])
    part = pl.DataFrame({"node": plan.node[lo:hi], "block": plan.block[lo:hi]})
    assert plan.rank is not None
    part = part.with_columns(pl.Series("rank", plan.rank[lo:hi]))
    lefts, rights = [], []
    for d in range(plan.window // 2 + 1):
        shifted = part.with_columns(pl.col("rank") - d)
        joined = part.join(shifted, on=["block", "rank"], suffix="_r")
        if d == 0:
            joined = joined.filter(pl.col("node") < pl.col("node_r"))
        a, b = joined["node"].to_numpy(), joined["node_r"].to_numpy()
        lefts.append(np.minimum(a, b))
        rights.append(np.maximum(a, b))
    return np.concatenate(lefts), np.concatenate(rights)


def pairs_recordlinkage(plan: BlockPlan, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the same pairs as `pairs_polars`, found by recordlinkage's `Index.block`."""
    import pandas as pd
    import recordlinkage

    if hi - lo < 2:  # no pair to form (and recordlinkage cannot index fewer than two rows)
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    part = pd.DataFrame({"block": plan.block[lo:hi]}, index=pd.Index(plan.node[lo:hi], name="node"))
    indexer = recordlinkage.Index()
    if plan.window:
        assert plan.rank is not None
        part["rank"] = plan.rank[lo:hi]
        # The ranks are global, so recordlinkage is told every possible rank, not only this chunk's.
        indexer.add(recordlinkage.index.SortedNeighbourhood(
            "rank", window=plan.window, block_on=["block"], sorting_key_values=np.arange(int(plan.rank.max()) + 1)))
    else:
        indexer.block("block")
    found = indexer.index(part)
    a = found.get_level_values(0).to_numpy(dtype=np.int64)
    b = found.get_level_values(1).to_numpy(dtype=np.int64)
    return np.minimum(a, b), np.maximum(a, b)


def _found_by(plan: BlockPlan, codes: dict[str, np.ndarray], left: np.ndarray, right: np.ndarray,
              n: int) -> np.ndarray:
    """Return which pairs a pass produces (used to skip pairs an earlier pass already gave)."""
    if not plan.window:
        return agree_on(codes, plan.key, left, right)
    assert plan.rank is not None
    rank = np.full(n, -1, dtype=np.int64)
    block = np.full(n, -1, dtype=np.int64)
    rank[plan.node], block[plan.node] = plan.rank, plan.block
    rl, rr = rank[left], rank[right]
    return (rl >= 0) & (rr >= 0) & (block[left] == block[right]) & (np.abs(rl - rr) <= plan.window // 2)


def candidate_pairs(plans: list[BlockPlan], codes: dict[str, np.ndarray], src: np.ndarray, link_type: str,
                    chunk_pairs: int, indexer: str) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (pass, left, right, new) chunks of the pairs of each pass allowed by the link type.

    `new` marks the pairs no earlier pass produced (a pair that agrees on every field of an
    earlier pass came from that pass): together they are the distinct candidate pairs, each once.
    """
    make = pairs_recordlinkage if indexer == "recordlinkage" else pairs_polars
    n = src.size
    for i, plan in enumerate(plans):
        for lo, hi in _block_ranges(plan, chunk_pairs):
            left, right = make(plan, lo, hi)
            ok = allowed(link_type, src[left], src[right])
            left, right = left[ok], right[ok]
            new = np.ones(left.size, dtype=bool)
            for earlier in plans[:i]:
                new &= ~_found_by(earlier, codes, left, right, n)
            if left.size:
                yield i, left, right, new
