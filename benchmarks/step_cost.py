"""Steady-state cost of one jitted train step of a config, for several override sets, interleaved.

  python -m benchmarks.step_cost [--config configs/shakespeare_char.py:cpu] [--rounds 3] [--calls 30] \
      --variant "f32 single=model.dtype=float32,parallel.strategy=single,parallel.cpu_devices=0" \
      --variant "bf16 pmap x2=model.dtype=bfloat16,parallel.strategy=pmap,parallel.cpu_devices=2"

Each (variant, round) runs in its own process (a device count is fixed at start-up), builds the run as
pretrain.main would (data from --shared), compiles, then times `--calls` calls of the step after two warm
calls. Rounds interleave the variants so a noisy shared machine slows all of them alike. Prints ms/step per
round and the median.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_CHILD = """
import json, sys, time
import jax
from pretrain import configlib
from pretrain.trainer import train
spec, overrides, calls = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
run = train.Run(configlib.load(spec, overrides), sys.argv[4])
k = run.config.train.steps_per_call
fn = run.train_fn()
state = run.strategy.place(run.init_state())
batches = [run.strategy.batch(run.batches(i * k, k), steps_axis=True) for i in range(4)]
for b in batches[:2]:
  state, m = fn(state, b)
jax.block_until_ready(m)
t = time.perf_counter()
for i in range(calls):
  state, m = fn(state, batches[i % 4])
jax.block_until_ready(m)
print(json.dumps((time.perf_counter() - t) / (calls * k) * 1e3))
"""


def parse_variant(text: str) -> tuple[str, list[tuple[str, str]]]:
  name, _, spec = text.partition("=")
  overrides = [tuple(item.split("=", 1)) for item in spec.split(",") if item]
  return name, overrides


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--config", default="configs/shakespeare_char.py:cpu")
  p.add_argument("--shared", default="../shared")
  p.add_argument("--variant", action="append", required=True, help="NAME=key=value,key=value,...")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--calls", type=int, default=30)
  o = p.parse_args(argv)
  variants = [parse_variant(v) for v in o.variant]
  data = [("data.path", os.path.join(o.shared, "data/tinyshakespeare/input.txt"))]
  times = {name: [] for name, _ in variants}
  for _ in range(o.rounds):
    for name, overrides in variants:
      out = subprocess.run([sys.executable, "-c", _CHILD, o.config, json.dumps(data + overrides), str(o.calls),
                            f"/tmp/step-cost-{os.getpid()}"], check=True, capture_output=True, text=True)
      times[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
  print(f"date: {time.strftime('%Y-%m-%d')}; {os.cpu_count()} CPU cores; {o.config}; {o.rounds} interleaved rounds")
  print("| variant | ms/step per round | median |")
  print("|---|---|---|")
  for name, _ in variants:
    print(f"| {name} | {' / '.join(f'{t:.1f}' for t in times[name])} | {statistics.median(times[name]):.1f} |")


if __name__ == "__main__":
  main()
