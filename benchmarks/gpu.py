"""The GPU run: nanoGPT and pretrain side by side on one GPU, measured in one command.

Run it through `bash benchmarks/gpu.sh` (which installs the wheels the machine lacks); on its own:
  python -m benchmarks.gpu --out DIR [--dry-run] [--budget SECONDS]
Stages, each a subprocess whose output goes to DIR/logs/STAGE.log, every line stamped with the seconds
since that stage's launch (the clock the times below are read from):
  ours_bB, nanogpt_bB   GPT-2 124M (12 x 768, vocab 50,304), batch B x 1024 random tokens, bf16: nanoGPT's
                        bench.py (torch.compile, its burn-in 10 + timed 20 iterations) and
                        configs/gpt2_124m.py:bench (median tokens/s of the train rows after the first).
  ours_char, nanogpt_char  the baby GPT (6 x 384, context 256, batch 64, dropout 0.2) on tiny shakespeare:
                        nanoGPT's config/train_shakespeare_char.py as written and configs/shakespeare_char.py:gpu,
                        each stopped at its first evaluation with val loss <= --target; the time is from the
                        command's launch (start-up and compilation included) to that evaluation's line.
  tests                 tests/test_gpu.py: cuDNN attention equals XLA's, a bf16 step is finite, a mesh on 1 GPU.
  levers                ours at batch 12 with one lever changed each: XLA's attention for cuDNN's, model.loss_chunk=128,
                        XLA's latency-hiding scheduler (parallel.xla_flags); result fields ours_*_b12_LEVER.
MFU for both uses nanoGPT's FLOP count (6N + 12 L H Q T per token) against --peak_tflops (989: H100/H200 dense bf16).
DIR/result.json is written after every stage, so a run cut short keeps what it measured.
--dry-run: every stage on CPU at tiny shapes (nanoGPT on its CPU path), "dry_run": true; a test of the script.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import shutil
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANOGPT = os.path.join(ROOT, "device", "nanogpt")
# The dry run's model in place of GPT-2 124M, for ours and nanoGPT alike.
DRY_MODEL = ["--config.model.num_layers=2", "--config.model.num_heads=2", "--config.model.width=128"]
N_PARAMS_124M = 123.59e6  # nanoGPT's count for GPT-2 124M at vocab 50,304 (position table excluded).


def flops_per_token(block_size: int) -> float:
  return 6 * N_PARAMS_124M + 12 * 12 * 12 * 64 * block_size


class Stage:
  """One subprocess, its output lines stamped with seconds since launch; stop(line) ends it early."""

  def __init__(self, out, name, cmd, cwd, timeout, env=None, stop=None):
    self.name, self.lines, self.rc, self.stopped = name, [], None, False
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    t0 = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(os.path.join(out, "logs", f"{name}.log"), "w") as log:
      log.write(f"# {' '.join(cmd)}   (cwd {os.path.relpath(cwd, ROOT)}, timeout {timeout:.0f} s)\n")
      if timeout < 5:
        log.write("# skipped: the run's time budget is spent\n")
        self.wall = 0.0
        return
      proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
      timer = threading.Timer(timeout, proc.kill)
      timer.start()
      for line in proc.stdout:
        t = time.time() - t0
        self.lines.append((t, line.rstrip("\n")))
        log.write(f"{t:8.2f} {line}")
        if stop is not None and not self.stopped and stop(line):
          self.stopped = True
          proc.kill()
      self.rc = proc.wait()
      timer.cancel()
      self.wall = time.time() - t0
      log.write(f"# exit {self.rc}{' (stopped on purpose)' if self.stopped else ''}, {self.wall:.1f} s\n")
    print(f"{name}: {self.wall:.1f} s, exit {self.rc}{' (stopped)' if self.stopped else ''}", flush=True)

  def matches(self, pattern):
    return [(t, m) for t, line in self.lines for m in [re.search(pattern, line)] if m]


NANOGPT_VAL = r"step (\d+): train loss [\d.]+, val loss ([\d.]+)"
OURS_VAL = r"step\s+(\d+) \| val loss ([\d.]+)"


def below(pattern, target):
  return lambda line: bool((m := re.search(pattern, line)) and float(m.group(2)) <= target)


def time_to(stage, pattern, target):
  """(seconds, step, best val) at the first evaluation with val <= target; seconds and step None if never."""
  vals = [(t, int(m.group(1)), float(m.group(2))) for t, m in stage.matches(pattern)]
  best = min((v for _, _, v in vals), default=None)
  hit = next(((t, s) for t, s, v in vals if v <= target), (None, None))
  return (*hit, best)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="folder for result.json and logs/")
  p.add_argument("--dry-run", action="store_true", help="every stage on CPU at tiny shapes")
  p.add_argument("--budget", type=float, default=None, help="seconds for all stages (default 450; dry run 540)")
  p.add_argument("--batches", default="12,32")
  p.add_argument("--target", type=float, default=None, help="baby GPT val loss (default 1.47; dry run 3.0)")
  p.add_argument("--stages", default="bench,char,tests,levers", help="which of bench,char (ours_char or nanogpt_char alone),tests,levers to run")
  p.add_argument("--ours_char_args", default="", help="more --config.x=y flags for our baby GPT run")
  p.add_argument("--peak_tflops", type=float, default=989.0, help="dense bf16 peak for MFU (H100/H200: 989)")
  a = p.parse_args(argv)
  dry, stages = a.dry_run, a.stages.split(",")
  budget = a.budget or (540 if dry else 450)
  target = a.target or (3.0 if dry else 1.47)
  out = os.path.abspath(a.out)
  os.makedirs(out, exist_ok=True)
  deadline = time.time() + budget
  left = lambda cap: min(cap, deadline - time.time())
  py = sys.executable
  shakespeare = os.path.join(NANOGPT, "data", "shakespeare_char", "input.txt")
  work = tempfile.mkdtemp(prefix="pretrain-gpu-")  # Run folders (checkpoints) stay out of DIR; metrics are copied.
  jax_env = {"PRETRAIN_DATA_DIR": os.path.join(work, "data"), "PRETRAIN_COMPILATION_CACHE": os.path.join(work, "jax-cache")}
  if dry:
    jax_env["JAX_PLATFORMS"] = "cpu"
  result = {"date": datetime.date.today().isoformat(), "dry_run": dry, "target_val": target,
            "ours_char_args": a.ours_char_args,
            "peak_tflops": a.peak_tflops, "stages": {}}

  def save():
    with open(os.path.join(out, "result.json"), "w") as f:
      json.dump(result, f, indent=1)

  def note(stage):
    result["stages"][stage.name] = {"wall_s": round(stage.wall, 1), "exit": stage.rc, "stopped": stage.stopped}
    save()

  probe = subprocess.run([py, "-c", "import jax; d = jax.devices()[0]; print(d.platform, '|', d.device_kind, '|', "
                          "jax.__version__)"], capture_output=True, text=True, env={**os.environ, **jax_env})
  result["jax_device"] = probe.stdout.strip() or probe.stderr.strip()[-300:]
  torch_probe = subprocess.run([py, "-c", "import torch; print(torch.__version__, '|', torch.cuda.is_available() and "
                                "torch.cuda.get_device_name(0))"], capture_output=True, text=True)
  result["torch"] = torch_probe.stdout.strip() or torch_probe.stderr.strip()[-300:]
  print(f"jax: {result['jax_device']}; torch: {result['torch']}", flush=True)
  save()

  block, steps = (32, 20) if dry else (1024, 100)

  def ours_bench(b, name, *levers):
    """configs/gpt2_124m.py:bench at batch b (with levers): result fields NAME_tokens_per_s and the like."""
    args = [f"--config.train.batch_size={b}", f"--config.model.context={block}", f"--config.train.steps={steps}",
            "--config.train.log_every=10" if dry else "--config.train.log_every=20", *levers]
    if dry:
      args += ["--config.model.attention=xla", "--config.data.random_tokens=4096", *DRY_MODEL]
    last = f"step {steps:>6} | loss"
    stage = Stage(out, name, [py, "-m", "pretrain.main", "--config", "configs/gpt2_124m.py:bench",
                              "--workdir", os.path.join(work, name), *args],
                  ROOT, left(240), env=jax_env, stop=lambda line: line.startswith(last))
    rows = []
    metrics = os.path.join(work, name, "metrics.jsonl")
    if os.path.exists(metrics):
      shutil.copy(metrics, os.path.join(out, "logs", f"{name}.metrics.jsonl"))
      rows = [r for r in map(json.loads, open(metrics)) if r.get("split") == "train"][1:]
    if rows:
      tps = statistics.median(r["tokens_per_s"] for r in rows)
      key = name.replace("ours_b", "ours_{}_b")
      result[key.format("tokens_per_s")] = round(tps)
      result[key.format("ms_per_iter")] = round(b * block / tps * 1000, 2)
      result[key.format("mfu")] = tps * flops_per_token(block) / (a.peak_tflops * 1e12)
      peaks = [r["peak_memory_gib"] for r in rows if "peak_memory_gib" in r]
      if peaks:
        result[key.format("peak_memory_gib")] = round(max(peaks), 2)
    note(stage)

  if "bench" in stages:
    # GPT-2 124M throughput at each batch size, ours first.
    for b in [int(x) for x in a.batches.split(",")]:
      ours_bench(b, f"ours_b{b}")
      bench = ["bench.py", f"--batch_size={b}", f"--block_size={block}", "--real_data=False"]
      if dry:  # bench.py synchronizes CUDA unconditionally (a no-op stands in) and fixes the model's size.
        cmd = [py, "-c", "import runpy, torch, model; torch.cuda.synchronize = lambda *a: None; c = model.GPTConfig; "
               "model.GPTConfig = lambda **k: c(**{**k, 'n_layer': 2, 'n_head': 2, 'n_embd': 128}); "
               "runpy.run_path('bench.py', run_name='__main__')", *bench[1:], "--device=cpu", "--compile=False",
               "--dtype=float32"]
      else:
        cmd = [py, *bench, "--compile=True"]
      nano = Stage(out, f"nanogpt_b{b}", cmd, NANOGPT, left(240))
      hit = nano.matches(r"time per iteration: ([\d.]+)ms")
      if hit:
        ms = float(hit[-1][1].group(1))
        tps = b * block / (ms / 1000)
        result[f"nanogpt_tokens_per_s_b{b}"] = round(tps)
        result[f"nanogpt_ms_per_iter_b{b}"] = ms
        result[f"nanogpt_mfu_b{b}"] = tps * flops_per_token(block) / (a.peak_tflops * 1e12)
      note(nano)

  if {"char", "ours_char", "nanogpt_char"} & set(stages):
    # The baby GPT to the target val loss.
    tiny = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=32", "--batch_size=8", "--max_iters=200",
            "--eval_interval=20", "--eval_iters=5", "--dropout=0.0", "--device=cpu", "--compile=False",
            "--dtype=float32", "--warmup_iters=10"] if dry else []
    prep = subprocess.run([py, "prepare.py"], cwd=os.path.dirname(shakespeare), capture_output=True, text=True)
    if prep.returncode:
      print(f"nanoGPT's prepare.py failed: {prep.stderr[-500:]}", flush=True)
    ours_tiny = ["--config.model.num_layers=2", "--config.model.num_heads=2", "--config.model.width=64",
                 "--config.model.context=32", "--config.train.batch_size=8", "--config.train.steps=200",
                 "--config.train.eval_every=20", "--config.train.checkpoint_every=200", "--config.eval.batches=5",
                 "--config.train.log_every=10", "--config.model.dtype=float32", "--config.model.attention=xla",
                 "--config.optim.warmup_steps=10"] if dry else []
    if "nanogpt_char" not in stages:
      ours = Stage(out, "ours_char", [py, "-m", "pretrain.main", "--config", "configs/shakespeare_char.py:gpu",
                                      f"--config.data.path={shakespeare}", "--workdir", os.path.join(work, "ours_char"),
                                      *ours_tiny, *a.ours_char_args.split()], ROOT, left(200), env=jax_env, stop=below(OURS_VAL, target))
      if os.path.exists(os.path.join(work, "ours_char", "metrics.jsonl")):
        shutil.copy(os.path.join(work, "ours_char", "metrics.jsonl"), os.path.join(out, "logs", "ours_char.metrics.jsonl"))
      t, step, best = time_to(ours, OURS_VAL, target)
      result.update({f"ours_s_to_{target}": t and round(t, 1), "ours_step_at_target": step, "ours_best_val": best})
      note(ours)
    if "ours_char" not in stages:
      nano = Stage(out, "nanogpt_char", [py, "train.py", "config/train_shakespeare_char.py",
                                         f"--out_dir={os.path.join(work, 'nanogpt_char')}", *tiny],
                   NANOGPT, left(240), stop=below(NANOGPT_VAL, target))
      t, step, best = time_to(nano, NANOGPT_VAL, target)
      result.update({f"nanogpt_s_to_{target}": t and round(t, 1), "nanogpt_iter_at_target": step,
                     "nanogpt_best_val": best})
      note(nano)
  # The check reads the 1.47 fields; a dry run's lower bar is stated in target_val.
  for who in ("ours", "nanogpt"):
    result.setdefault(f"{who}_s_to_1.47", result.get(f"{who}_s_to_{target}"))

  if "tests" in stages:
    tests = Stage(out, "tests", [py, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "tests/test_gpu.py"], ROOT,
                  left(150), env={**jax_env, "JAX_PLATFORMS": "cpu" if dry else "", "XLA_FLAGS": "",
                                   "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})  # Its runs share the GPU with pytest.
    result["tests"] = tests.lines[-1][1] if tests.lines else None
    note(tests)

  if "levers" in stages:
    # What one lever gives: XLA's own attention in place of cuDNN's (the anchors measured 22.8% vs 40.2% MFU).
    ours_bench(12, "ours_b12_xla_attention", "--config.model.attention=xla")
    # The loss's logits 128 positions at a time (2.5 GB of float32 logits at batch 12 otherwise), then XLA's
    # latency-hiding scheduler, each alone.
    ours_bench(12, "ours_b12_loss_chunk", "--config.model.loss_chunk=128")
    ours_bench(12, "ours_b12_latency_hiding",
               "--config.parallel.xla_flags=--xla_gpu_enable_latency_hiding_scheduler=true")

  for b in a.batches.split(","):
    o, n = result.get(f"ours_tokens_per_s_b{b}"), result.get(f"nanogpt_tokens_per_s_b{b}")
    if o and n:
      print(f"GPT-2 124M b{b}: ours {o:,} tok/s ({result[f'ours_mfu_b{b}']:.1%} MFU) vs nanoGPT {n:,} "
            f"({result[f'nanogpt_mfu_b{b}']:.1%}): {o / n:.2f}x")
  o, n = result.get("ours_s_to_1.47"), result.get("nanogpt_s_to_1.47")
  print(f"baby GPT to val {target}: ours {o} s (best {result.get('ours_best_val')}) vs nanoGPT {n} s "
        f"(best {result.get('nanogpt_best_val')})" + (f": {o / n:.2f}x" if o and n else ""))
  print(f"tests: {result.get('tests')}", flush=True)
  save()
  shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
