"""Statistical disclosure control for published counts: small counts suppressed, the rest rounded.

A count of 1 to `threshold - 1` could point at an identifiable person, so it is shown as "<threshold";
every other count is rounded to the nearest multiple of `rounding` (half up) so that differences between
published tables cannot be used to recover a small count. Zero is shown as it is: knowing that nobody is
in a cell discloses nothing about a person.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Disclosure:
    """The rule for publishing a count: suppress 1 to `threshold - 1`, round the rest to `rounding`.

    `threshold` 0 or 1 means no suppression; `rounding` 1 means no rounding.
    """

    threshold: int = 8
    rounding: int = 5

    def __post_init__(self) -> None:
        for name in ("threshold", "rounding"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"Disclosure {name} must be a whole number, got {type(value).__name__}")
        if self.threshold < 0:
            raise ValueError(f"Disclosure threshold must be 0 or more (0 or 1 means no suppression), "
                             f"got {self.threshold}")
        if self.rounding < 1:
            raise ValueError(f"Disclosure rounding must be 1 or more (1 means no rounding), got {self.rounding}")

    def value(self, count: int) -> int | None:
        """Return the count as published: rounded to a multiple of `rounding`, or None when suppressed."""
        c = _check_count(count)
        if c == 0:
            return 0
        if c < self.threshold:
            return None
        r = self.rounding
        # Half up: a remainder of at least half of r (r odd: more than half) goes up to the next multiple.
        return c - c % r + (r if c % r >= (r + 1) // 2 else 0)

    def show(self, count: int) -> str:
        """Return the count as published text: "0", "<8", "15" or "1,235" (with a thousands separator)."""
        v = self.value(count)
        return f"<{self.threshold}" if v is None else f"{v:,}"

    def column(self, counts: pl.Series) -> pl.Series:
        """Return `show` of every count as a String series of the same name; a null count stays null."""
        if not counts.dtype.is_integer():
            raise ValueError(f"counts {counts.name!r} must be whole numbers, got dtype {counts.dtype}")
        negative = int((counts < 0).sum())
        if negative:
            raise ValueError(f"counts {counts.name!r} has {negative} negative value(s); counts must be 0 or more")
        c, r = pl.col("c").cast(pl.Int64), self.rounding
        rounded = c - c % r + pl.when(c % r >= (r + 1) // 2).then(r).otherwise(0)
        shown = (pl.when(c == 0).then(pl.lit("0"))
                 .when(c < self.threshold).then(pl.lit(f"<{self.threshold}"))
                 .otherwise(_with_thousands(rounded)))
        return counts.to_frame("c").select(shown.alias(counts.name)).to_series()


def _check_count(count: int) -> int:
    """Return the count as a Python int, or raise if it is not a whole number of 0 or more."""
    if isinstance(count, bool):
        raise TypeError("a count must be a whole number, got bool")
    c = operator.index(count)  # accepts numpy integers, rejects floats
    if c < 0:
        raise ValueError(f"a count must be 0 or more, got {c}")
    return c


def _with_thousands(v: pl.Expr) -> pl.Expr:
    """Return the text of a non-negative whole number with a comma between groups of three digits."""
    # Polars has no grouped number format and its regex has no look-ahead, so the digits are reversed,
    # a comma is put after every full group of three, and a trailing comma (a group at the front) is dropped.
    return (v.cast(pl.String).str.reverse()
            .str.replace_all(r"(\d{3})", "${1},")
            .str.strip_chars_end(",")
            .str.reverse())
