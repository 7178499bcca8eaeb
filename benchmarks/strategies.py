"""Overhead of each parallel strategy on the same CPU cores: shakespeare_char:cpu step time under
single, pmap and mesh, on 1 and 8 (fake) devices.

  python -m benchmarks.strategies [--shared ../shared] [--steps 300]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from pretrain.trainer import metrics

CASES = [("single", 1, []), ("pmap", 1, []), ("mesh", 1, []),
         ("pmap", 8, []), ("mesh", 8, ["--config.parallel.mesh_shape=(8,1)"]),
         ("mesh", 8, ["--config.parallel.mesh_shape=(1,8)"])]


def step_ms(shared, strategy, devices, extra, steps):
  workdir = tempfile.mkdtemp(prefix="bench-strategy-")
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  subprocess.run([sys.executable, "-m", "pretrain.main", "--config", "configs/shakespeare_char.py:cpu",
                  "--config.data.path", os.path.join(shared, "data/tinyshakespeare/input.txt"), "--workdir", workdir,
                  f"--config.train.steps={steps}", "--config.train.eval_every=100000", "--config.train.log_every=50",
                  f"--config.parallel.strategy={strategy}", "--config.train.batch_size=16", *extra],
                 check=True, stdout=subprocess.DEVNULL, env=env)
  rows = metrics.read(workdir)
  tps = statistics.median(r["tokens_per_s"] for r in rows if r["split"] == "train" and r["step"] > 50)
  return 1000 * 16 * 64 / tps


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--shared", default="../shared")
  p.add_argument("--steps", type=int, default=300)
  o = p.parse_args(argv)
  print("| strategy | devices | ms/step (batch 16 x 64) |")
  print("|---|---|---|")
  for strategy, devices, extra in CASES:
    label = strategy + (f" {extra[0].split('=')[1]}" if extra else "")
    print(f"| {label} | {devices} | {step_ms(o.shared, strategy, devices, extra, o.steps):.1f} |", flush=True)


if __name__ == "__main__":
  main()
