"""Where a CPU training step's time goes, and what this CPU's matmul kernels do, in one command.

  python -m benchmarks.cpu_profile [--shared ../shared] [--config configs/shakespeare_char.py:cpu] [extra overrides]

Prints, for the machine it runs on (the CPU model and its vector extensions first, then the instruction
sets YNNPACK's bf16 dot kernels exist for in the installed jaxlib, e.g. amxbf16 for Intel's AMX):
1. matmul throughput at the :cpu step's shapes, each library on its defaults (all cores): XLA's float32 dot,
   XLA's bfloat16 dot (result bfloat16, what `x @ w` is), bfloat16 operands into a float32 result
   (pretrain.models.matmul, model.bf16_matmul), and PyTorch's float32 and bfloat16 `mm`;
2. one jax.profiler trace of the config's steps 100..120, its time per step split by kind: YNNPACK's
   fusions (matmuls, and the reductions XLA gives it too), matmuls XLA computes itself, the collectives of
   pmap and meshes (waits included), and the elementwise fusions, with the five costliest operations.
Run it on each machine a speed figure is reported for; BENCHMARKS.md keeps the results.
"""
import argparse
import collections
import glob
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

SHAPES = ((384, 128, 384), (384, 128, 512), (384, 512, 128), (128, 384, 512))  # M, K, N: rows of one device.


def cpu_model() -> str:
  try:
    info = open("/proc/cpuinfo").read()
  except OSError:
    return platform.processor()
  model = re.search(r"model name\s*:\s*(.*)", info)
  flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split()) if "flags" in info else set()
  isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
  return f"{model.group(1).strip() if model else platform.processor()} ({os.cpu_count()} cores; {' '.join(isa)})"


def ynnpack_bf16_kernels() -> list[str]:
  """The instruction sets of the bf16-into-f32 dot kernels YNNPACK has in the installed jaxlib (read from its
  symbol names): which of them this CPU can run decides what model.bf16_matmul's matmuls run on."""
  import mmap
  import jaxlib
  path = os.path.join(os.path.dirname(jaxlib.__file__), "libjax_common.so")
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
    found = re.findall(rb"dot_bf16_bf16_fp32_\d+x\d+x\d+_\d+x\d+x\d+_([a-z0-9]+)E", image)
  return sorted({isa.decode() for isa in found})


def _rate(fn, flops, seconds=0.5):
  fn()
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    fn()
    calls += 1
  return flops * calls / (time.perf_counter() - start) / 1e9


def matmul_table() -> list[tuple]:
  import jax
  import jax.numpy as jnp
  import torch
  from pretrain.models import matmul
  repeat = 16  # Products per jitted call, so that dispatch is a small part of each call.

  def xla(fn, dtype, m, k, n):
    x, w = jnp.ones((repeat, m, k), dtype), jnp.ones((k, n), dtype)
    f = jax.jit(lambda x, w: [fn(x[i], w) for i in range(repeat)])
    return lambda: jax.block_until_ready(f(x, w))

  rows = []
  for m, k, n in SHAPES:
    flops = 2 * m * k * n
    a32, b32 = torch.ones(m, k), torch.ones(k, n)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    rows.append((f"{m}x{k}x{n}",
                 _rate(xla(jnp.dot, jnp.float32, m, k, n), flops * repeat),
                 _rate(xla(jnp.dot, jnp.bfloat16, m, k, n), flops * repeat),
                 _rate(xla(matmul.matmul, jnp.bfloat16, m, k, n), flops * repeat),
                 _rate(lambda: torch.mm(a32, b32), flops), _rate(lambda: torch.mm(a16, b16), flops)))
  return rows


def _kind(name: str) -> str:
  if name.startswith("ynn_fusion"):
    return "YNNPACK (matmuls, some reductions)"
  if name.startswith(("dot", "xnn_fusion", "onednn")):
    return "matmuls (XLA's own)"
  if name.startswith(("all-reduce", "all-gather", "reduce-scatter", "Rendezvous", "Wait", "collective")):
    return "collectives and waits"
  return "elementwise and other"


def step_breakdown(shared: str, config: str, extra: list[str], start: int = 100, end: int = 120) -> dict:
  workdir = tempfile.mkdtemp(prefix="cpu-profile-")
  cmd = [sys.executable, "-m", "pretrain.main", "--config", config, "--workdir", workdir,
         f"--config.train.steps={end}", f"--config.train.profile_steps=({start},{end})",
         "--config.eval.batches=1", *extra]
  if shared:
    cmd += ["--config.data.path", os.path.join(shared, "data/tinyshakespeare/input.txt")]
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  from jax.profiler import ProfileData
  trace = ProfileData.from_file(glob.glob(f"{workdir}/**/*.xplane.pb", recursive=True)[0])
  per_kind, per_op, threads = collections.Counter(), collections.Counter(), 0
  for plane in trace.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):  # The threads that run compiled code, one per device here.
        continue
      threads += 1
      for event in line.events:
        if event.name.startswith("ThunkExecutor"):  # The envelope of the ops below.
          continue
        per_kind[_kind(event.name)] += event.duration_ns
        per_op[re.sub(r"\.\d+$", "", event.name)] += event.duration_ns
  scale = 1e6 * (end - start) * max(threads, 1)  # ns -> ms per step and thread.
  return {"threads": threads, "kinds": {k: v / scale for k, v in per_kind.most_common()},
          "top": [(k, v / scale) for k, v in per_op.most_common(5)]}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--shared", default="../shared", help="where data/tinyshakespeare lives ('' for the config's path)")
  p.add_argument("--config", default="configs/shakespeare_char.py:cpu")
  o, extra = p.parse_known_args(argv)  # The rest: --config.x=y overrides for the profiled run.
  print(f"{time.strftime('%Y-%m-%d')}: {cpu_model()}")
  print(f"YNNPACK's bf16 -> f32 dot kernels in this jaxlib: {', '.join(ynnpack_bf16_kernels()) or 'none found'}")
  print("\n| M x K x N | XLA f32 | XLA bf16 (bf16 result) | bf16 -> f32 (matmul.py) | PyTorch f32 | PyTorch bf16 |")
  print("|---|---|---|---|---|---|")
  for name, *rates in matmul_table():
    print(f"| {name} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")
  print("(GFLOP/s)")
  shared = o.shared if o.shared and os.path.isdir(os.path.join(o.shared, "data/tinyshakespeare")) else ""
  out = step_breakdown(shared, o.config, extra)
  total = sum(out["kinds"].values())
  print(f"\n{o.config} {' '.join(extra)}: {total:.1f} ms per step on each of {out['threads']} device threads")
  print("| kind | ms/step | share |\n|---|---|---|")
  for kind, ms in out["kinds"].items():
    print(f"| {kind} | {ms:.1f} | {100 * ms / total:.0f}% |")
  print("costliest operations: " + ", ".join(f"{k} {v:.1f} ms" for k, v in out["top"]))


if __name__ == "__main__":
  main()
