"""tunekit: adapt a pretrained language model to your task, prove it beats a baseline, register,
serve and monitor it.

The public API is small: load a config, run the lifecycle, catch tunekit's errors. Each stage's
entry function lives in its own package (``tunekit.data.prepare``, ``tunekit.train.run``, ...).
Heavy libraries (torch, transformers, MLflow) load only when a stage runs.
"""

from __future__ import annotations

from importlib import metadata

from tunekit.config import TunekitConfig, load_config
from tunekit.errors import ConfigError, DataError, InputError, ModelError, RegistryError, TunekitError

try:
    __version__ = metadata.version("tunekit")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = [
    "ConfigError", "DataError", "InputError", "ModelError", "RegistryError", "TunekitConfig", "TunekitError",
    "__version__", "load_config", "run",
]


def run(cfg: TunekitConfig, console=None, resume: str | None = None):
    """The whole lifecycle (what ``tunekit run`` does); see ``tunekit.pipeline.run``."""
    from tunekit import pipeline

    return pipeline.run(cfg, console, resume)
