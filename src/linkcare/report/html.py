"""Build one self-contained HTML report: inline CSS, matplotlib plots as inline SVG, no scripts,
fonts or anything else fetched from a network, so it opens offline in any browser.

Every count of people a report shows goes through the site's disclosure control (`count`).
"""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

from linkcare import __version__
from linkcare.disclosure import Disclosure

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;color:#1d2327;background:#fff}
header{background:#005eb8;color:#fff;padding:1.2em 2em}
header h1{margin:0 0 .3em 0;font-size:1.6em}
main{padding:1em 2em;max-width:1100px}
section{margin:1.5em 0 2.5em 0}
h2{border-bottom:2px solid #005eb8;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #c8cdd0;padding:.3em .6em;text-align:right}
th{background:#f0f4f5}
td:first-child,th:first-child{text-align:left}
.facts td{text-align:left}
.note{color:#425563;font-size:.92em;max-width:60em}
figure{margin:.8em 0}
figure svg{max-width:100%;height:auto}
figcaption{color:#425563;font-size:.9em}
nav a{margin-right:1em;color:#005eb8}
.icons td,.legend td{text-align:left;vertical-align:middle}
td svg,.note svg{vertical-align:middle}
"""

_PLOT_RC: dict[str, Any] = {"svg.fonttype": "none", "svg.hashsalt": "linkcare", "font.size": 10,
            "axes.spines.top": False, "axes.spines.right": False}


def new_figure(width: float = 7.0, height: float = 3.6, ncols: int = 1) -> tuple[Any, Any]:
    """Return a matplotlib figure and its axes, drawn off-screen (no display needed).

    The figure is a `matplotlib.figure.Figure` of its own, not one of pyplot's: pyplot's backend
    and figure list belong to the process (a notebook that imports linkcare keeps its own), and a
    figure nobody registered needs no closing.
    """
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(cast(Any, _PLOT_RC)):
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.subplots(1, ncols)
    return fig, ax


def log_scale(ax: Any, which: str) -> None:
    """Put a log scale on the x or y axis (`which`) of matplotlib axes, labelled with plain numbers
    ("1,000"): the default labels are typeset as powers of ten, which takes most of a plot's drawing time."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def svg(fig: Any) -> str:
    """Return a matplotlib figure as an inline <svg> element.

    The XML prolog, DOCTYPE, metadata and namespace declarations are dropped: inline SVG in HTML
    needs none of them, and they hold URLs a strict offline check would flag.
    """
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(cast(Any, _PLOT_RC)):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    return text.replace("xlink:href", "href")


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def table(header: Sequence[str], rows: Iterable[Sequence[object]], css: str = "") -> str:
    """Return an HTML table; every cell is escaped text."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(fig: Any, caption: str, name: str) -> str:
    """Return a figure element holding the plot as inline SVG; `name` identifies it in tests."""
    return f'<figure data-plot="{escape(name)}">{svg(fig)}<figcaption>{escape(caption)}</figcaption></figure>'


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


class Report:
    """A report under construction: a header of facts (inputs, config hash, version, date) and
    sections in order."""

    def __init__(self, title: str, facts: Sequence[tuple[str, str]], disclosure: Disclosure,
                 when: dt.datetime | None = None) -> None:
        self.title = title
        self.disclosure = disclosure
        stamp = (when or dt.datetime.now()).strftime("%Y-%m-%d %H:%M")
        rule = (f"counts of 1 to {disclosure.threshold - 1} shown as <{disclosure.threshold}, "
                if disclosure.threshold > 1 else "no suppression, ")
        rule += f"others rounded to the nearest {disclosure.rounding}" if disclosure.rounding > 1 else "no rounding"
        self.facts = [*facts, ("linkcare version", __version__), ("written", stamp), ("disclosure control", rule)]
        self.sections: list[tuple[str, str, str]] = []

    def count(self, n: int) -> str:
        """Return a count of people as it may be published."""
        return self.disclosure.show(int(n))

    def shown(self, whole: int) -> bool:
        """Return whether a group of `whole` is large enough for a share of it to be published."""
        return whole > 0 and whole >= self.disclosure.threshold

    def share(self, part: int, whole: int) -> str:
        """Return part/whole as a percentage, "suppressed" for a group below the disclosure threshold,
        or "–" for an empty one."""
        if whole == 0:
            return "–"
        if not self.shown(whole):
            return "suppressed"
        return f"{part / whole:.1%}"

    def published(self, n: int) -> int:
        """Return a count of people or records as it may be drawn in a plot: rounded, 0 if suppressed."""
        return self.disclosure.value(int(n)) or 0

    def section(self, anchor: str, title: str, *parts: str) -> None:
        self.sections.append((anchor, title, "".join(parts)))

    def render(self) -> str:
        nav = "".join(f'<a href="#{escape(a)}">{escape(t)}</a>' for a, t, _ in self.sections)
        body = "".join(f'<section id="{escape(a)}"><h2>{escape(t)}</h2>{content}</section>'
                       for a, t, content in self.sections)
        facts = table(("", ""), self.facts, css="facts").replace("<thead><tr><th></th><th></th></tr></thead>", "")
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{escape(self.title)}</title><style>{_CSS}</style></head><body>"
                f"<header><h1>{escape(self.title)}</h1></header><main>{facts}<nav>{nav}</nav>{body}</main>"
                f"</body></html>\n")

    def write(self, path: Path) -> int:
        """Write the report; return its size in bytes."""
        text = self.render()
        Path(path).write_text(text, encoding="utf-8")
        return len(text.encode("utf-8"))


__all__ = ["Report", "escape", "figure", "log_scale", "new_figure", "note", "svg", "table"]
