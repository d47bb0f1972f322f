"""What a trained optimizer costs to use: its step time at a model size and its state per parameter.

Measured once when the optimizer is made, on the machine that made it, and saved in its
manifest: a user can tell before loading it whether a step fits their budget.
"""

from __future__ import annotations

import platform
import time

import torch
from pydantic import BaseModel, ConfigDict, Field

from l2l_plugin.optimizer.network import LSTMOptimizerNet

#: The model size the issue's users compare at: one step over 10⁶ parameters.
PROFILE_PARAMETERS = 1_000_000


class CostProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    parameters: int = Field(ge=1, description="Parameters of the model the step was timed on.")
    step_ms: float = Field(ge=0, description="Median wall time of one LearnedOptimizer.step on them.")
    adam_step_ms: float = Field(ge=0, description="torch.optim.Adam (foreach) on the same parameters, same run.")
    state_bytes_per_parameter: int = Field(ge=0, description="Optimizer state kept per parameter.")
    threads: int = Field(ge=1, description="torch intra-op threads during the timing.")
    device: str
    machine: str = Field(description="Processor and platform the timing ran on.")

    @property
    def ratio_to_adam(self) -> float:
        return self.step_ms / self.adam_step_ms if self.adam_step_ms > 0 else float("inf")


def cpu_name() -> str:
    """The processor's model name (Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _median_ms(step, repeats: int) -> float:
    step()  # the first step allocates the state: not part of a step's cost
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2] * 1e3


def measure_cost_profile(
    net: LSTMOptimizerNet,
    parameters: int = PROFILE_PARAMETERS,
    device: torch.device | str = "cpu",
    repeats: int = 3,
) -> CostProfile:
    """Time ``LearnedOptimizer.step`` over ``parameters`` coordinates (one tensor) beside Adam."""
    from l2l_plugin.artifacts import OptimizerManifest, Provenance, TrainedOptimizer
    from l2l_plugin.optimizer.learned_optimizer import LearnedOptimizer

    device = torch.device(device)
    manifest = OptimizerManifest(
        network=net.config, family="-", family_config={}, meta_training={}, provenance=Provenance(library_version="-")
    )
    param = torch.zeros(parameters, device=device, requires_grad=True)
    param.grad = torch.randn(parameters, device=device) * 1e-2

    def synchronised(step):
        def run() -> None:
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        return run

    with torch.no_grad():
        # Named, so an optimizer with per-group LSTMs times its default LSTM without a warning.
        learned = LearnedOptimizer([("weight", param)], TrainedOptimizer(manifest, net))
        step_ms = _median_ms(synchronised(lambda: learned.step(loss=1.0)), repeats)  # loss_input needs one
        adam = torch.optim.Adam([param], lr=1e-3, foreach=True)
        adam_ms = _median_ms(synchronised(adam.step), repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return CostProfile(
        parameters=parameters,
        step_ms=round(step_ms, 3),
        adam_step_ms=round(adam_ms, 4),
        state_bytes_per_parameter=net.state_bytes_per_coordinate(),
        threads=torch.get_num_threads(),
        device=str(device),
        machine=f"{name} ({platform.system()} {platform.machine()}, {torch.get_num_threads()} threads)",
    )
