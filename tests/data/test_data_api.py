"""The data stage's public surface is pinned: other stages import only these names."""

from __future__ import annotations

import dataclasses

import tunekit.data


def test_public_exports():
    assert tunekit.data.__all__ == ["PreparedData", "prepare", "read_rows", "render_report_markdown", "summary"]


def test_prepared_data_fields():
    fields = [f.name for f in dataclasses.fields(tunekit.data.PreparedData)]
    assert fields == ["train", "validation", "test", "labels", "fingerprint", "test_fingerprint", "directory", "report", "reused"]
