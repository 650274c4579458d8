"""Small inline SVG symbols (28 px) for the variation and assurance icons of NHS England's *Making Data
Count* (https://www.england.nhs.uk/publication/making-data-count/), with their plain-English wording.

The shapes are linkcare's own, drawn after the MDC icons; the colours are those of the MDC icon set as
NHSRplotthedots 0.2.2 ships it (inst/icons/, commit 050b07d7eacc011767532732f69b8fd7d6a28fd3): blue
#0072C6 improvement or pass, orange #FF6600 concern or fail, purple #8000C0 neutral, greys #7F7F7F and
#BFBFBF common cause and hit and miss. Every symbol has a <title> and an aria-label, so it reads aloud.
No xmlns attribute: inline SVG in HTML needs none, and its URL would trip an offline check.
"""

from __future__ import annotations

import html

BLUE = "#0072C6"
ORANGE = "#FF6600"
PURPLE = "#8000C0"
GREY = "#7F7F7F"
LIGHT_GREY = "#BFBFBF"

# What each variation icon of the latest point says (the kinds of linkcare.monitor.spc.VARIATION_ICONS).
VARIATION_WORDS: dict[str, str] = {
    "common_cause": "common cause variation: no sign of change beyond the usual month-to-month variation",
    "improvement_high": "special cause variation, improving: the measure is unusually high, and higher is better",
    "improvement_low": "special cause variation, improving: the measure is unusually low, and lower is better",
    "concern_high": "special cause variation, of concern: the measure is unusually high, and lower is better",
    "concern_low": "special cause variation, of concern: the measure is unusually low, and higher is better",
    "neutral_high": "special cause variation: the measure is unusually high (neither direction is better)",
    "neutral_low": "special cause variation: the measure is unusually low (neither direction is better)",
}

# What each assurance icon says: the plan at the latest month against that month's process limits.
ASSURANCE_WORDS: dict[str, str] = {
    "pass": "the plan lies beyond the limits on the worse side: the plan will be met consistently",
    "fail": "the plan lies beyond the limits on the better side: it will be missed consistently "
            "unless the process changes",
    "hit_and_miss": "the plan lies inside the limits: hitting it will be hit and miss",
}
NO_ASSURANCE_WORDS = "no assurance: there is no plan at the latest month, or neither direction is better"

_VARIATION_TITLES = {
    "common_cause": "Common cause variation",
    "improvement_high": "Special cause variation: improvement (high)",
    "improvement_low": "Special cause variation: improvement (low)",
    "concern_high": "Special cause variation: concern (high)",
    "concern_low": "Special cause variation: concern (low)",
    "neutral_high": "Special cause variation: neutral (high)",
    "neutral_low": "Special cause variation: neutral (low)",
}
_ASSURANCE_TITLES = {
    "pass": "Assurance: consistently meets the plan",
    "fail": "Assurance: consistently misses the plan",
    "hit_and_miss": "Assurance: hit and miss against the plan",
}

_SIZE = 28
_FONT = 'font-family="system-ui,Arial,sans-serif" font-weight="bold" text-anchor="middle"'

# The little run of dots inside a variation icon: (x, y) in the 28-unit box, the last three coloured for a
# special cause. Common cause wanders about the middle; "high" ends rising, "low" ends falling.
_DOTS_COMMON = ((7.0, 15.0), (10.5, 12.5), (14.0, 15.5), (17.5, 12.5), (21.0, 15.0))
_DOTS_HIGH = ((7.0, 17.0), (10.5, 18.5), (14.0, 16.5), (17.5, 12.5), (21.0, 9.0))
_DOTS_LOW = ((7.0, 11.0), (10.5, 9.5), (14.0, 11.5), (17.5, 15.5), (21.0, 19.0))


def variation_icon(kind: str) -> str:
    """Return the inline SVG of a variation icon: `kind` is one of VARIATION_WORDS' keys."""
    if kind not in _VARIATION_TITLES:
        raise ValueError(f"unknown variation icon {kind!r}; expected one of {', '.join(_VARIATION_TITLES)}")
    title = _VARIATION_TITLES[kind]
    if kind == "common_cause":
        return _svg(title, LIGHT_GREY, _dots(_DOTS_COMMON, GREY, GREY))
    colour = {"improvement": BLUE, "concern": ORANGE, "neutral": PURPLE}[kind.split("_")[0]]
    high = kind.endswith("_high")
    letter = _text("H" if high else "L", 8.0, 11.0 if high else 22.0, 7, colour)
    return _svg(title, colour, _dots(_DOTS_HIGH if high else _DOTS_LOW, GREY, colour) + letter)


def assurance_icon(kind: str | None) -> str:
    """Return the inline SVG of an assurance icon: `kind` is one of ASSURANCE_WORDS' keys, or None for the
    empty icon of a chart with no assurance (no plan, or no better direction)."""
    if kind is None:
        return _svg("No assurance: no plan to compare with", LIGHT_GREY, "")
    if kind not in _ASSURANCE_TITLES:
        raise ValueError(f"unknown assurance icon {kind!r}; expected one of {', '.join(_ASSURANCE_TITLES)} or None")
    colour, letter = {"pass": (BLUE, "P"), "fail": (ORANGE, "F"), "hit_and_miss": (GREY, "?")}[kind]
    # The plan as a dashed line under the letter, as on the MDC icons' target line.
    plan_line = (f'<line x1="7" y1="20.5" x2="21" y2="20.5" stroke="{colour}" stroke-width="1.4" '
                 'stroke-dasharray="2 1.5"/>')
    return _svg(_ASSURANCE_TITLES[kind], colour, _text(letter, 14.0, 17.0, 12, colour) + plan_line)


def _svg(title: str, ring: str, body: str) -> str:
    """Return a 28 px SVG with a title, a white disc ringed in `ring`, and `body` drawn on it."""
    t = html.escape(title)
    return (
        f'<svg width="{_SIZE}" height="{_SIZE}" viewBox="0 0 {_SIZE} {_SIZE}" role="img" aria-label="{t}">'
        f"<title>{t}</title>"
        f'<circle cx="14" cy="14" r="12.5" fill="#FFFFFF" stroke="{ring}" stroke-width="2"/>'
        f"{body}</svg>"
    )


def _dots(points: tuple[tuple[float, float], ...], line: str, last: str) -> str:
    """Return a polyline through `points` with a dot on each, the last three in colour `last`."""
    path = " ".join(f"{x:g},{y:g}" for x, y in points)
    out = [f'<polyline points="{path}" fill="none" stroke="{line}" stroke-width="1"/>']
    for i, (x, y) in enumerate(points):
        fill = last if i >= len(points) - 3 else GREY
        out.append(f'<circle cx="{x:g}" cy="{y:g}" r="1.7" fill="{fill}"/>')
    return "".join(out)


def _text(letter: str, x: float, y: float, size: int, colour: str) -> str:
    """Return an SVG text element of `letter` at (x, y), baseline at y."""
    return f'<text x="{x:g}" y="{y:g}" font-size="{size}" fill="{colour}" {_FONT}>{html.escape(letter)}</text>'
