"""The report card as one self-contained HTML file: Markdown rendered, plots embedded.

The Markdown card is the single source of the report's content; this module renders it with
markdown-it and inlines every referenced PNG as a data URI, so the file can be mailed, attached
to a ticket or opened from MLflow without the run folder beside it.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, Segoe UI, Roboto, sans-serif; color: #1d232a; max-width: 1100px;
       margin: 2rem auto; padding: 0 1.5rem; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #1f77b4; padding-bottom: .3rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; color: #1f4e79; }
table { border-collapse: collapse; margin: .6rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d5dbe1; padding: .25rem .6rem; vertical-align: top; }
td:first-child { min-width: 14em; }
th { background: #eef3f8; text-align: left; }
tr:nth-child(even) td { background: #f8fafc; }
code { background: #f1f3f5; padding: 0 .25rem; border-radius: 3px; font-size: 90%; }
img { max-width: 100%; border: 1px solid #e3e7eb; margin: .5rem 0; }
p strong:first-child { color: #1f4e79; }
"""


def render(markdown: str, base_dir: Path, title: str) -> str:
    """HTML page for ``markdown``; images are resolved relative to ``base_dir`` and embedded."""
    body = MarkdownIt("commonmark").enable("table").render(markdown)
    body = re.sub(r'<img src="([^"]+)"', lambda m: f'<img src="{_data_uri(base_dir / html.unescape(m[1]))}"', body)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}</body></html>\n")


def _data_uri(path: Path) -> str:
    if not path.is_file():
        return html.escape(path.name)  # leave a broken image rather than failing the whole report
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
