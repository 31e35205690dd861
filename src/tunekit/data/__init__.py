"""The data stage: configured files in, frozen fingerprinted splits and a data report out.

``prepare(cfg)`` is the entry point. Rows are read once (``read``), checked loudly with file, line
and column (``validate``), split with a seeded stratified split (``split``), frozen in the workspace
under their fingerprint (``store``) and described in a data report (``report``, ``lengths``,
``markdown``). Every later stage reads only ``PreparedData``.
"""

from __future__ import annotations

from tunekit.data.markdown import render_report_markdown
from tunekit.data.prepare import PreparedData, prepare, read_rows, summary
from tunekit.data.prepared import Prepared

__all__ = ["Prepared", "PreparedData", "prepare", "read_rows", "render_report_markdown", "summary"]
