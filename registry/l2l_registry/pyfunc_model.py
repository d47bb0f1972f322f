"""The MLflow pyfunc wrapping a trained optimizer's files.

``mlflow.pyfunc.load_model(uri).unwrap_python_model()`` returns a :class:`LearnedOptimizerModel`;
its ``optimizer(model.parameters())`` is a ``LearnedOptimizer``. ``predict`` exposes the same
update rule to generic MLflow tooling: gradients in, the learned updates out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mlflow.pyfunc
import torch
from pydantic import BaseModel, Field

from l2l_plugin import LearnedOptimizer, TrainedOptimizer, load_trained_optimizer
from l2l_plugin.artifacts import OptimizerManifest
from l2l_registry.conventions import OPTIMIZER_ARTIFACT


class UpdateRequest(BaseModel):
    """One parameter vector's gradients over consecutive steps, from a fresh optimizer state."""

    gradients: list[list[float]] = Field(description="steps × coordinates")
    losses: list[float] | None = Field(
        None, description="the loss at each step (optimizers trained with loss_input)"
    )


class UpdateResponse(BaseModel):
    updates: list[list[float]]  # steps × coordinates: what the optimizer adds to the parameters


class LearnedOptimizerModel(mlflow.pyfunc.PythonModel):
    trained: TrainedOptimizer | None = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.trained = load_trained_optimizer(context.artifacts[OPTIMIZER_ARTIFACT])

    def _trained(self) -> TrainedOptimizer:
        if self.trained is None:
            raise RuntimeError("the model's context was not loaded (use mlflow.pyfunc.load_model)")
        return self.trained

    @property
    def manifest(self) -> OptimizerManifest:
        return self._trained().manifest

    def optimizer(self, params: Iterable[Any], lr: float = 1.0) -> LearnedOptimizer:
        """A fresh ``torch.optim.Optimizer`` over ``params`` (every call gets its own state)."""
        return LearnedOptimizer(params, self._trained(), lr=lr)

    def predict(
        self, context: Any, model_input: list[UpdateRequest], params: dict[str, Any] | None = None
    ) -> list[UpdateResponse]:
        return [self._updates(request) for request in model_input]

    def _updates(self, request: UpdateRequest) -> UpdateResponse:
        if not request.gradients:
            return UpdateResponse(updates=[])
        theta = torch.zeros(len(request.gradients[0]), requires_grad=True)
        optimizer = self.optimizer([theta])
        updates = []
        for step, gradient in enumerate(request.gradients):
            before = theta.detach().clone()
            theta.grad = torch.tensor(gradient, dtype=torch.float32)
            loss = request.losses[step] if request.losses is not None else None
            optimizer.step(loss=loss)
            updates.append((theta.detach() - before).tolist())
        return UpdateResponse(updates=updates)
