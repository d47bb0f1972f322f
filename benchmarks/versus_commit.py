"""Wall time of the same meta-training in this tree and in an earlier commit, runs alternating.

    python benchmarks/versus_commit.py f0f702a --family quadratic --iterations 300 --rounds 3

The earlier commit is checked out in a temporary git worktree and imported first on
PYTHONPATH (the library and the family's plugin packages), so each side runs its own code and
its own family defaults, with the iterations fixed, no time budget and one intra-op thread.
Runs alternate old/new so that a shared machine's load falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

SNIPPET = """
import json, sys, time
from l2l_plugin import make_family
from l2l_plugin.pipeline import resolve_meta_train_config
from l2l_plugin.training import meta_train
family = make_family(sys.argv[1], {})
config = resolve_meta_train_config(family, json.loads(sys.argv[2]))
started = time.perf_counter()
result = meta_train(family, config)
print(json.dumps({"seconds": time.perf_counter() - started, "iterations": result.iterations}))
"""


def _run(tree: Path, family: str, overrides: dict) -> dict:
    paths = [tree, *sorted(p for p in (tree / "plugins").iterdir() if p.is_dir())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET, family, json.dumps(overrides)],
        env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commit")
    parser.add_argument("--family", default="quadratic")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    overrides = {"meta_iterations": args.iterations, "max_seconds": None, "cpu_threads": 1}
    with tempfile.TemporaryDirectory() as scratch:
        old_tree = Path(scratch) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old_tree), args.commit],
                       check=True, capture_output=True)
        try:
            seconds: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(args.rounds):
                for name, tree in (("old", old_tree), ("new", REPO)):
                    result = _run(tree, args.family, overrides)
                    assert result["iterations"] == args.iterations, result
                    seconds[name].append(result["seconds"])
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], check=False)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    summary = {"command": " ".join(sys.argv), "machine": machine_info(), "commit": args.commit,
               "family": args.family, "iterations": args.iterations, "seconds": seconds,
               "median_seconds": medians, "new_over_old": medians["new"] / medians["old"]}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    print(f"`python {summary['command']}` — {summary['machine']}\n")
    print("| family | iterations | commit s | this tree s | this tree / commit |")
    print("|---|---|---|---|---|")
    print(f"| {args.family} | {args.iterations} | {medians['old']:.1f} | {medians['new']:.1f} | {summary['new_over_old']:.2f}× |")


if __name__ == "__main__":
    main()
