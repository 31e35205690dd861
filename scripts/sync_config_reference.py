"""Regenerate the README's config reference from the config's field descriptions.

tests/test_config.py fails when the README and `tunekit config reference` disagree; run this
after changing a config field: .venv/bin/python scripts/sync_config_reference.py
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"

reference = subprocess.run([sys.executable, "-m", "tunekit.cli", "config", "reference"], capture_output=True, text=True,
                           check=True).stdout.strip()
readme = (ROOT / "README.md").read_text(encoding="utf-8")
before, rest = readme.split(START)
_, after = rest.split(END)
(ROOT / "README.md").write_text(before + START + "\n" + reference + "\n" + END + after, encoding="utf-8")
print("README.md config reference updated")
