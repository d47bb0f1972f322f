"""How long ``load_optimizer("models:/…")`` takes in a fresh process, and where the time goes.

    .venv/bin/python benchmarks/load_time.py                 # builds a throwaway embedded store first
    .venv/bin/python benchmarks/load_time.py --store DIR     # an existing embedded store (L2L_MLFLOW_DIR)

Every measurement is a new interpreter (what a training job is), run one after the other:

- ``imports``: ``import torch`` and ``from l2l_registry import load_optimizer``;
- ``load``: the ``load_optimizer(uri, params)`` call, the first optimizer of the process;
- ``load, torch warm``: the same call in a process that built a ``torch.optim.SGD`` first,
  which is timed on its own (``first torch optimizer``): torch imports ``torch._dynamo`` the
  first time any optimizer is constructed (or ``zero_grad`` is called), ``torch.optim.Adam``
  included, so that second is torch's and any training loop pays it.

Routes: the champion alias and a version number on the embedded store (resolved without MLflow,
``l2l_registry.local_store``), the same alias through MLflow (``L2L_FAST_LOAD=0``, what every
load cost before), and the optimizer's folder on disk. ``--breakdown`` times the steps of the
MLflow route one by one in one more fresh process. Results go to
``benchmarks/results/load_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

FAMILY = "quadratic"
MODEL = f"l2l-{FAMILY}"

PROBE = textwrap.dedent(
    """
    import json, sys, time, warnings
    warnings.simplefilter("default")  # show every warning, as a user's -W default or pytest would
    started = time.perf_counter()
    import torch
    from l2l_registry import load_optimizer
    imported = time.perf_counter()
    first_torch = None
    if sys.argv[2] == "warm":
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        first_torch = time.perf_counter() - imported
    theta = torch.zeros(4, requires_grad=True)
    before = time.perf_counter()
    optimizer = load_optimizer(sys.argv[1], [theta])
    loaded = time.perf_counter()
    print("RESULT " + json.dumps({
        "imports": imported - started, "load": loaded - before, "first_torch_optimizer": first_torch,
        "mlflow_imported": "mlflow" in sys.modules, "family": optimizer.trained.manifest.family,
    }))
    """
)

BREAKDOWN = textwrap.dedent(
    """
    import json, sys, tempfile, time
    steps = {}
    def step(name, started):
        now = time.perf_counter(); steps[name] = now - started; return now
    t = time.perf_counter()
    import torch
    from l2l_registry import load_optimizer
    from l2l_registry.loading import check_model_uri, find_optimizer_dir
    from l2l_plugin import LearnedOptimizer, load_trained_optimizer
    from pathlib import Path
    t = step("import torch, l2l_registry", t)
    import mlflow
    t = step("import mlflow", t)
    from mlflow.artifacts import download_artifacts
    t = step("import mlflow.artifacts", t)
    from l2l_registry.store import client, configure
    store = configure()
    mlflow_client = client(store)
    t = step("open MLflow's SQL store (SqlAlchemyStore)", t)
    check_model_uri(sys.argv[1], store)
    t = step("check the URI (registered model, aliases, versions)", t)
    with tempfile.TemporaryDirectory() as tmp:
        local = download_artifacts(artifact_uri=sys.argv[1], dst_path=tmp,
                                   tracking_uri=store.tracking_uri, registry_uri=store.registry_uri)
        t = step("download_artifacts (resolve alias, copy the model)", t)
        trained = load_trained_optimizer(find_optimizer_dir(Path(local)))
        t = step("read optimizer.json + weights.safetensors", t)
    LearnedOptimizer([torch.zeros(4, requires_grad=True)], trained)
    t = step("LearnedOptimizer(...) (torch's first optimizer: imports torch._dynamo)", t)
    print("RESULT " + json.dumps(steps))
    """
)


def run_probe(script: str, args: list[str], env: dict[str, str]) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir()
    )
    if done.returncode != 0:
        raise RuntimeError(f"probe failed ({done.returncode}):\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[7:]), done.stderr


def build_store(directory: Path) -> Path:
    """A tiny quadratic optimizer, registered and made champion (about 20 s)."""
    env = {**os.environ, "L2L_MLFLOW_DIR": str(directory), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    script = textwrap.dedent(
        f"""
        import os
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        from l2l_registry import meta_train_and_register, promote
        meta = {{"meta_batch_size": 8, "horizon": 10, "unroll_length": 5, "meta_iterations": 6,
                "validation_every": 3, "validation_tasks": 4, "preset": "paper",
                "evaluation": {{"test_tasks": 6, "tuning_tasks": 3, "lr_points_per_decade": 1}}}}
        outcome, result = meta_train_and_register("{FAMILY}", {{"dim": 4}}, meta, "{directory / 'run'}")
        if not result.promoted:
            promote("{FAMILY}", result.version, "load-time benchmark")
        print(result.version)
        """
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True, timeout=600)
    return directory / "run"


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    from machine import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="an embedded store directory with l2l-quadratic@champion")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per route and mode")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load_time.json")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the step-by-step MLflow route")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="l2l-load-bench-") as tmp:
        store = args.store or Path(tmp) / "mlflow"
        folder = None if args.store else build_store(store) / "optimizer"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
        env.update(L2L_MLFLOW_DIR=str(store), MLFLOW_DISABLE_TELEMETRY="true")
        routes = [
            ("models:/…@champion", f"models:/{MODEL}@champion", {}),
            ("models:/…/1", f"models:/{MODEL}/1", {}),
            ("models:/…@champion through MLflow (L2L_FAST_LOAD=0)", f"models:/{MODEL}@champion", {"L2L_FAST_LOAD": "0"}),
        ]
        if folder is not None:
            routes.append(("local optimizer folder", str(folder), {}))
        results: dict[str, dict] = {}
        for label, uri, extra in routes:
            entry: dict[str, list] = {"imports": [], "load": [], "load_torch_warm": [], "first_torch_optimizer": []}
            noise = False
            mlflow_imported = False
            for _ in range(args.repeats):
                for mode in ("cold", "warm"):
                    result, stderr = run_probe(PROBE, [uri, mode], {**env, **extra})
                    noise = noise or "noload" in stderr
                    mlflow_imported = mlflow_imported or result["mlflow_imported"]
                    entry["imports"].append(result["imports"])
                    if mode == "cold":
                        entry["load"].append(result["load"])
                    else:
                        entry["load_torch_warm"].append(result["load"])
                        entry["first_torch_optimizer"].append(result["first_torch_optimizer"])
            results[label] = {
                "uri": uri,
                "env": extra,
                **{key: summarise(values) for key, values in entry.items()},
                "mlflow_imported": mlflow_imported,
                "noload_warning_on_stderr": noise,
            }
            row = results[label]
            print(
                f"{label:<55} imports {row['imports']['median']:.2f} s  load {row['load']['median']:.2f} s  "
                f"load (torch warm) {row['load_torch_warm']['median']:.2f} s  "
                f"first torch optimizer {row['first_torch_optimizer']['median']:.2f} s  "
                f"mlflow imported: {mlflow_imported}  noload warning: {noise}",
                flush=True,
            )
        breakdown = None
        if not args.no_breakdown:
            breakdown, _ = run_probe(BREAKDOWN, [f"models:/{MODEL}@champion"], env)
            print("\nthe MLflow route, step by step (one fresh process):")
            for name, seconds in breakdown.items():
                print(f"  {seconds:6.2f} s  {name}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": machine_info(), "repeats": args.repeats, "routes": results, "breakdown": breakdown}, indent=2)
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
