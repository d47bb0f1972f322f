"""What a trained optimizer costs to use: its step time at a model size and its state per parameter.

Measured once when the optimizer is made, on the machine that made it, and saved in its
manifest: a user can tell before loading it whether a step fits their budget.
"""

from __future__ import annotations

import platform
import time

import torch
from pydantic import BaseModel, ConfigDict, Field

from l2l_plugin.optimizer.config import OptimizerNetConfig
from l2l_plugin.optimizer.network import STATE_DTYPES, LSTMOptimizerNet

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


def state_bytes_per_coordinate(config: OptimizerNetConfig) -> int:
    """What an optimizer of ``config`` keeps per coordinate, from the config alone (no net built):
    h and c of every layer in ``state_dtype``, the float32 moments, and NTM-BFGS's float32 memory
    (slots × write heads × 2 kept write vectors plus one read per read head)."""
    lstm = 2 * config.num_layers * config.hidden_size * STATE_DTYPES[config.state_dtype].itemsize
    moments = 4 * (len(config.momentum_decays) + 1) if config.uses_moments else 0
    memory = 4 * config.memory.rows if config.memory is not None else 0
    return lstm + moments + memory


def step_work_per_coordinate(config: OptimizerNetConfig) -> int:
    """Multiply-adds per coordinate of one step without a graph: the LSTM layers' gates, the head,
    and for NTM-BFGS the memory heads, the inner products and the weighted sum of a read."""
    hidden, reads = config.hidden_size, config.read_heads
    inputs = config.num_features + reads
    work = 0
    for _ in range(config.num_layers):
        work += 4 * hidden * (inputs + hidden)
        inputs = hidden
    work += (hidden + reads) * config.num_outputs
    if config.memory is not None:
        kept = config.memory.slots * config.memory.write_heads
        work += hidden * (2 * config.memory.write_heads + reads) + 2 * kept * reads
    return work


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
