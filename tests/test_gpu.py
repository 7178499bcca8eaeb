"""What benchmarks/gpu.sh checks on the GPU before timing anything: cuDNN attention computes XLA's, a bf16 train
step stays finite, and the mesh strategy runs on one GPU. On a CPU the cuDNN test skips and the other two run on
the CPU (the gpu.sh dry run); in `make test` they run on the fake CPU devices like every other test."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import read_metrics, run_main
from pretrain.models import gpt

on_gpu = jax.default_backend() == "gpu"


@pytest.mark.skipif(not on_gpu, reason="cuDNN attention needs a GPU")
def test_cudnn_attention_equals_xla_in_the_model():
  config = dict(vocab_size=256, context=128, num_layers=2, num_heads=4, width=256, dtype=jnp.bfloat16)
  tokens_BxT = jax.random.randint(jax.random.key(0), (4, 128), 0, 256)
  xla = gpt.GPT(gpt.GPTConfig(**config, attention_implementation="xla"))
  cudnn = gpt.GPT(gpt.GPTConfig(**config, attention_implementation="cudnn"))
  params = xla.init(jax.random.key(1), tokens_BxT)
  a_BxTxV = np.asarray(jax.jit(xla.apply)(params, tokens_BxT), np.float32)
  b_BxTxV = np.asarray(jax.jit(cudnn.apply)(params, tokens_BxT), np.float32)
  # Both round through bf16; their sums run in different orders.
  assert np.abs(a_BxTxV - b_BxTxV).max() <= 2e-2 * max(1.0, np.abs(a_BxTxV).max())
  assert "cudnn" in jax.jit(cudnn.apply).lower(params, tokens_BxT).compile().as_text().lower()


def test_bf16_step_is_finite(tmp_path):
  run_main("--config", "configs/gpt2_124m.py:smoke", "--config.model.dtype=bfloat16", "--config.model.attention=cudnn",
           "--workdir", tmp_path / "run")
  losses = [r["loss"] for r in read_metrics(tmp_path / "run", "train")]
  assert losses and all(math.isfinite(x) for x in losses)


def test_mesh_runs_on_the_devices_there(tmp_path):
  proc = run_main("--config", "configs/quickstart.py:tiny", "--config.parallel.strategy=mesh",
                  "--workdir", tmp_path / "run")
  assert f"on {jax.device_count()} device(s)" in proc.stdout
  assert math.isfinite(read_metrics(tmp_path / "run", "val")[-1]["loss"])
