"""Time of one pmap checkpoint save on 8 fake CPU devices: the strategy's `for_checkpoint` plus Orbax's
synchronous save, for a GPT of `--width` (a train state of params and AdamW moments).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.pmap_save [--width 384] [--saves 10]
"""
import argparse
import os
import statistics
import tempfile
import time

import jax


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--width", type=int, default=384)
  p.add_argument("--layers", type=int, default=6)
  p.add_argument("--saves", type=int, default=10)
  o = p.parse_args(argv)
  from pretrain import configlib, models
  from pretrain.trainer import checkpoint, train
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = configlib.load(os.path.join(root, "configs/quickstart.py:tiny"), [
      ("parallel.strategy", "pmap"), ("model.width", str(o.width)), ("model.num_layers", str(o.layers)),
      ("model.num_heads", "6"), ("train.batch_size", "16")])
  workdir = tempfile.mkdtemp(prefix="bench-pmap-save-")
  run = train.Run(config, workdir)
  state = run.strategy.place(run.init_state())
  n = models.count_params(state.params) // len(jax.local_devices())
  ckpt = checkpoint.Checkpointer(workdir, keep=1, async_save=False)
  unreplicate, total = [], []
  for i in range(o.saves + 1):
    tick = time.perf_counter()
    saved = jax.block_until_ready(run.strategy.for_checkpoint(state))
    middle = time.perf_counter()
    ckpt.save(i, saved)
    ckpt.wait()
    if i:  # The first save compiles.
      unreplicate.append(middle - tick)
      total.append(time.perf_counter() - tick)
  print(f"{n:,} parameters on {len(jax.local_devices())} devices: for_checkpoint "
        f"{1000 * statistics.median(unreplicate):.1f} ms, whole save {1000 * statistics.median(total):.1f} ms "
        f"(median of {o.saves})")


if __name__ == "__main__":
  main()
