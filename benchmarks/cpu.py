"""Side by side on this CPU, in one session: our shakespeare_char:cpu against nanoGPT's CPU command.

  python -m benchmarks.cpu [--shared ../shared] [--steps 2000] [--variant cpu]

Reads the tiny shakespeare text and runs the nanoGPT peer from ../shared (data/, bench/nanogpt_cpu.sh),
measures the matmul limit of this machine, and prints a markdown table: median ms/step and tokens/s
after compilation, model GFLOP/s against the limit, final val loss, and the speed ratio.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from pretrain.trainer import metrics, run_dir


def matmul_limit_gflops(dtype: str, n: int = 1024, repeats: int = 20) -> float:
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), getattr(jnp, dtype))
  f = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(repeats):
    out = f(a)
  out.block_until_ready()
  return 2 * n ** 3 * repeats / (time.perf_counter() - t) / 1e9


def ours(shared: str, steps: int, variant: str, extra: list[str]) -> dict:
  workdir = tempfile.mkdtemp(prefix="bench-ours-")
  cmd = [sys.executable, "-m", "pretrain.main", "--config", f"configs/shakespeare_char.py:{variant}",
         "--config.data.path", os.path.join(shared, "data/tinyshakespeare/input.txt"), "--workdir", workdir,
         f"--config.train.steps={steps}", f"--config.optim.decay_steps={steps}", *extra]
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  rows = metrics.read(workdir)
  train = [r for r in rows if r["split"] == "train"][1:]  # The first window includes compilation.
  tokens_per_s = statistics.median(r["tokens_per_s"] for r in train)
  flops = statistics.median(r["model_flops_per_s"] for r in train)
  config = run_dir.saved_config(workdir)
  tokens_per_step = config.train.batch_size * config.model.context
  return {"tokens_per_s": tokens_per_s, "ms_per_step": 1000 * tokens_per_step / tokens_per_s,
          "gflops": flops / 1e9, "val_loss": [r for r in rows if r["split"] == "val"][-1]["loss"],
          "dtype": config["model"]["dtype"], "command": " ".join(cmd[1:])}


def nanogpt(shared: str, steps: int) -> dict:
  out = subprocess.run([os.path.join(shared, "bench/nanogpt_cpu.sh"), str(steps)], check=True,
                       capture_output=True, text=True).stdout.strip().splitlines()[-1]
  return json.loads(out)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--shared", default="../shared")
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--variant", default="cpu")
  p.add_argument("extra", nargs="*", help="more --config.x=y overrides for our run")
  o = p.parse_args(argv)
  limit = {d: matmul_limit_gflops(d) for d in ("float32", "bfloat16")}
  peer = nanogpt(o.shared, o.steps)
  mine = ours(o.shared, o.steps, o.variant, o.extra)
  ratio = mine["tokens_per_s"] / peer["tokens_per_s"]
  print(f"date: {time.strftime('%Y-%m-%d')}; {os.cpu_count()} CPU cores; matmul limit "
        f"{limit['float32']:.0f} GFLOP/s f32, {limit['bfloat16']:.0f} GFLOP/s bf16 (1024^2 jnp.dot)")
  print("| run | ms/step | tokens/s | model GFLOP/s | val loss |")
  print("|---|---|---|---|---|")
  print(f"| nanoGPT (PyTorch CPU, eager) | {peer['ms_per_iter_median']:.1f} | {peer['tokens_per_s']:,} | "
        f"| {peer['val_loss_last']:.4f} (20 random batches) |")
  lim = limit["bfloat16" if mine["dtype"] == "bfloat16" else "float32"]
  print(f"| pretrain ({mine['dtype']}) | {mine['ms_per_step']:.1f} | {mine['tokens_per_s']:,.0f} | "
        f"{mine['gflops']:.1f} ({100 * mine['gflops'] / lim:.0f}% of the limit) | {mine['val_loss']:.4f} |")
  print(f"ratio (tokens/s, ours / nanoGPT): {ratio:.2f}x")
  print(f"our command: python {mine['command']}")
  print(json.dumps({"ratio": ratio, "ours": mine, "nanogpt": peer, "matmul_limit_gflops": limit}))


if __name__ == "__main__":
  main()
