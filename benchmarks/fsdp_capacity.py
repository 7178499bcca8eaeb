"""Bytes per device of the train state under FSDP over 8 devices, from the strategy's own shardings of
configs/gpt2_124m.py's state (8 fake CPU devices; nothing is allocated), and what that leaves room for
on one H200.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.fsdp_capacity [--compile]

--compile also compiles the train step (micro-batch 12 x 1024, bf16 compute) and prints XLA's temporary
memory per device: activations, gathered layers and gradients in flight.
"""
import argparse
import os

import jax
import numpy as np

H200_BYTES = 139 * 2**30  # What one H200 offers JAX (the device machine's own figure).


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--compile", action="store_true")
  o = p.parse_args(argv)
  from pretrain import configlib, models
  from pretrain.trainer import parallel, train
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = configlib.load(os.path.join(root, "configs/gpt2_124m.py:bench"), [
      ("parallel.strategy", "mesh"), ("parallel.mesh_shape", "(1,8)"), ("train.batch_size", "96"),
      ("optim.accum_steps", "1"), ("train.steps_per_call", "1"), ("model.attention", "xla")])
  run = train.Run(config, "/tmp/unused-fsdp-capacity")
  abstract = run.strategy.abstract(jax.eval_shape(run.init_state))
  params = models.count_params(abstract.params)
  whole = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(abstract))
  per_device = sum(np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                   for x in jax.tree_util.tree_leaves(abstract))
  grads = 4 * params / 8  # float32 gradients, reduce-scattered to the same shards
  print(f"{params:,} parameters; state {whole / params:.2f} bytes/parameter ({whole / 2**30:.2f} GiB); "
        f"per device under FSDP x 8: state {per_device / params:.3f} + gradients {grads / params:.3f} bytes/parameter")
  print(f"one H200 ({H200_BYTES / 2**30:.0f} GiB) x 8, state and gradients only: "
        f"{H200_BYTES / ((per_device + grads) / params) / 1e9:.1f}B parameters")
  if o.compile:
    run.strategy.place(parallel.init(run.init_state, abstract))  # 1.5 GB over the 8 fake devices
    fn = run.train_fn()
    batch = run.strategy.batch(run.batches(0, 1), steps_axis=True)
    memory = fn.lower(abstract, batch).compile().memory_analysis()
    print(f"train step, micro-batch {config.train.batch_size // 8} x {run.seq_len} per device: "
          f"{memory.temp_size_in_bytes / 2**30:.2f} GiB temporaries per device")


if __name__ == "__main__":
  main()
