"""The fine-tuned models service mode answers for, loaded on first use.

A request's ``model`` (``ft:smollm2:default:bot:1a2b3c4d``) names a succeeded job of the caller's
project; anything else, another project's model included, is a 404. Every LoRA-family model of one
base shares one copy of the base weights: the first loads the base with its adapter, the next ones
are added to it as named adapters (``Generator.add_adapter``), so ten fine-tuned SmolLM2 models
cost one SmolLM2 and ten small adapters. A fully fine-tuned model is a model of its own.
"""

from __future__ import annotations

import threading

from fastapi import Request

from tunekit.artifacts import Manifest, Workspace
from tunekit.serve.keys import project_of
from tunekit.serve.loading import LoadedModel
from tunekit.serve.openai_schemas import ModelCard
from tunekit.service.catalogue import Catalogue
from tunekit.service.jobs import JobStore

__all__ = ["ModelPool"]


class ModelPool:
    """Implements ``openai_routes.Served`` over the job store."""

    def __init__(self, workspace: Workspace, device: str = "cpu"):
        self.workspace, self.device = workspace, device
        self.jobs, self.catalogue = JobStore(workspace), Catalogue(workspace)
        self.loaded: dict[str, LoadedModel] = {}  # base model id (shared by adapters) or the model id (full checkpoints)
        self.lock = threading.Lock()

    def pick(self, model: str, http: Request) -> LoadedModel:
        return self.get(project_of(getattr(http.state, "key", None)), model)

    def get(self, project: str, model: str) -> LoadedModel:
        """The loaded model answering for ``model``, loading it on first use; 404 unless it is ``project``'s."""
        from tunekit.models.causal import load_generator

        job = self.jobs.by_model(project, model)
        path = self.workspace.run(job.id) / "adapter"
        with self.lock:
            for loaded in self.loaded.values():
                if model in loaded.model.adapters or loaded.name == model:
                    return loaded
            base = Manifest.read(path).base_model.id
            shared = self.loaded.get(base)
            if (path / "adapter_config.json").is_file() and shared is not None:
                shared.model.add_adapter(model, path)
                return shared
            gen = load_generator(path, self.device, name=model)
            loaded = LoadedModel(model=gen, name=model, version=None, source=str(path))
            self.loaded[base if gen.adapters else model] = loaded
            return loaded

    def cards(self, http: Request) -> list[ModelCard]:
        """The catalogue's base models (to fine-tune) and this project's fine-tuned models (to call)."""
        project = project_of(getattr(http.state, "key", None))
        bases = [ModelCard(id=b.name, created=b.added_at, owned_by="tunekit") for b in self.catalogue.list()]
        return bases + [ModelCard(id=j.fine_tuned_model, created=j.finished_at, owned_by=project) for j in self.jobs.models(project)]
