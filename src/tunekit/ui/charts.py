"""plotly.js for the console's charts, from the installed ``plotly`` package, made to work under a CSP
without ``style-src 'unsafe-inline'``.

plotly.js ships one file and, by default, writes its own CSS into ``<style>`` elements it creates
(rules for hover labels, the legend, drag cursors, ...), which a strict CSP blocks. It skips that when
the page already holds an element with the id it would use, marked ``.no-inline-styles`` (the global
rules) or just present (the CSS of its map traces). So the console serves those rules as a stylesheet,
``plotly.css``, read out of the installed bundle itself (the rules object that follows ``"X,X div"``),
and the page's head holds the marked elements. The mode bar is turned off in ``console.js``: its
button colours are per-chart style elements that could not be served ahead.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

__all__ = ["plotly_css", "plotly_js", "preset_style_ids"]

_RULES_START = '{"X,X div"'
_ENTRY = re.compile(r'"((?:[^"\\]|\\.)*)":(?:\'((?:[^\'\\]|\\.)*)\'|"((?:[^"\\]|\\.)*)")')


def plotly_js() -> Path:
    """plotly.js as the ``plotly`` package installs it (the console never reaches a CDN)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@functools.cache
def plotly_css() -> str:
    """The global CSS rules plotly.js would inject, as a stylesheet; empty when this bundle's layout is
    not the one known here (the charts still draw, with plainer hover labels)."""
    text = plotly_js().read_text(encoding="utf-8")
    start = text.find(_RULES_START)
    if start < 0:
        return ""
    end = text.find("};", start)
    if end < 0:
        return ""
    rules = []
    for match in _ENTRY.finditer(text, start, end + 1):
        selector = match[1].lstrip(",")  # plotly's own replace(/^,/, " ,") for the few rules that start with a comma
        selector = selector.replace("X", ".js-plotly-plot .plotly").replace("Y", ".plotly-notifier")
        rules.append(f"{selector}{{{match[2] if match[2] is not None else match[3]}}}")
    return "\n".join(rules) + "\n"


@functools.cache
def preset_style_ids() -> tuple[str, ...]:
    """Ids of the ``<style>`` elements plotly.js adds at load unless an element with that id exists."""
    text = plotly_js().read_text(encoding="utf-8")
    return tuple(sorted(set(re.findall(r'getElementById\("([0-9a-f]{64})"\)\)\{var \w+=document\.createElement\("style"\)', text))))
