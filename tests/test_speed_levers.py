"""Speed levers are config fields that change speed, not results (bf16 aside)."""
import os

import jax
import numpy as np
import pytest

from pretrain.trainer import run_dir, train
from tests.conftest import read_metrics, run_main, tiny_config


def _params(workdir):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(run_dir.load(str(workdir)).params)]


def test_k_steps_per_call_equal_k_single_calls(tmp_path):
  train.train(tiny_config(**{"train.log_every": 10}), str(tmp_path / "one"))
  train.train(tiny_config(**{"train.log_every": 10, "train.steps_per_call": 5}), str(tmp_path / "five"))
  for x, y in zip(_params(tmp_path / "one"), _params(tmp_path / "five")):
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-6)
  assert [r["step"] for r in read_metrics(tmp_path / "five", "train")] == [10, 20]


def test_remat_and_donation_do_not_change_the_run(tmp_path):
  base = train.train(tiny_config(), str(tmp_path / "a"))
  for name, overrides in {"remat_full": {"model.remat": "full"}, "remat_dots": {"model.remat": "dots"},
                          "no_donation": {"train.donate": "false"}, "one_hot_embeddings": {"model.embed_lookup": "one_hot"}}.items():
    out = train.train(tiny_config(**overrides), str(tmp_path / name))
    np.testing.assert_allclose(out["loss"], base["loss"], rtol=1e-5)


def test_bfloat16_compute_trains(tmp_path):
  out = train.train(tiny_config(**{"model.dtype": "bfloat16"}), str(tmp_path))
  first = read_metrics(tmp_path, "train")[0]["loss"]
  assert np.isfinite(out["loss"]) and out["loss"] < first


def test_gpt2_124m_smoke_runs_end_to_end(tmp_path):
  proc = run_main("--config", "configs/gpt2_124m.py:smoke", "--workdir", tmp_path)
  assert "using xla attention" in proc.stdout  # cudnn is asked for; this CPU falls back with a note
  assert read_metrics(tmp_path, "val")[-1]["step"] == 6


def test_one_hot_embeddings_give_the_gathers_outputs_and_gradients():
  import jax.numpy as jnp
  from pretrain.models import gpt
  config = dict(vocab_size=65, context=16, num_layers=1, num_heads=2, width=16, position="rope")
  gather, one_hot = gpt.GPT(gpt.GPTConfig(**config)), gpt.GPT(gpt.GPTConfig(**config, embed_lookup="one_hot"))
  tokens_BxT = jax.random.randint(jax.random.key(0), (3, 16), 0, 65)
  params = gather.init(jax.random.key(1), tokens_BxT)
  np.testing.assert_array_equal(one_hot.apply(params, tokens_BxT), gather.apply(params, tokens_BxT))
  grads = [jax.grad(lambda p, m=m: jnp.sum(m.apply(p, tokens_BxT) ** 2))(params) for m in (gather, one_hot)]
  for x, y in zip(*map(jax.tree_util.tree_leaves, grads)):
    np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6)


def test_dropout_masks_from_another_generator(tmp_path):
  out = train.train(tiny_config(**{"model.dropout": 0.1, "train.dropout_rng": "unsafe_rbg"}), str(tmp_path / "rbg"))
  assert np.isfinite(out["loss"])
  proc = run_main("--config", "configs/quickstart.py:tiny", "--config.train.dropout_rng=philox",
                  "--workdir", tmp_path / "bad", check=False)
  assert proc.returncode != 0 and "train.dropout_rng='philox' is not a generator" in proc.stderr


def test_mfu_is_nanogpts_flop_count_over_the_peak(tmp_path):
  from pretrain.trainer import metrics
  assert metrics.peak_flops("NVIDIA H200") == 989e12 and metrics.peak_flops("TPU v5 lite") == 197e12
  assert metrics.peak_flops("TPU v5p") == 459e12 and metrics.peak_flops("cpu") is None
  config = tiny_config(**{"log.peak_flops": 0.5})  # 0.5 TFLOP/s per device.
  assert config.parallel.strategy == "single"
  train.train(config, str(tmp_path))
  L, H, D, T = config.model.num_layers, config.model.num_heads, config.model.width, config.model.context
  params = run_dir.load(str(tmp_path)).params
  n = sum(np.size(x) for path, x in jax.tree_util.tree_leaves_with_path(params) if "wpe" not in jax.tree_util.keystr(path))
  by_hand = 6 * n + 12 * L * H * (D // H) * T
  for row in read_metrics(tmp_path, "train"):
    per_device = row["tokens_per_s"] * by_hand  # parallel.strategy=single: one device.
    assert abs(row["mfu"] - per_device / 0.5e12) <= 1e-9 + 1e-6 * row["mfu"]


def test_a_chunked_loss_gives_the_whole_losses_and_gradients():
  """model.loss_chunk: the head and softmax a few positions at a time (ragged last chunk included), tied or untied
  head, with the same loss and gradients as all positions at once."""
  import jax.numpy as jnp
  from pretrain.models import gpt
  tokens_BxT = jax.random.randint(jax.random.key(0), (3, 21), 0, 97)
  for extra in ({}, {"tie_embeddings": False}):
    config = dict(vocab_size=97, context=20, num_layers=2, num_heads=2, width=32, position="rope", **extra)
    whole, chunked = gpt.GPT(gpt.GPTConfig(**config)), gpt.GPT(gpt.GPTConfig(**config, loss_chunk=7))
    params = whole.init(jax.random.key(1), tokens_BxT[:, :-1])
    nll = lambda m, p: m.apply(p, tokens_BxT[:, :-1], targets_BxT=tokens_BxT[:, 1:])
    np.testing.assert_allclose(nll(chunked, params), nll(whole, params), rtol=1e-6)
    grads = [jax.grad(lambda p, m=m: jnp.mean(nll(m, p)))(params) for m in (whole, chunked)]
    for x, y in zip(*map(jax.tree_util.tree_leaves, grads)):
      np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-7)


def test_a_run_with_a_chunked_loss_matches_the_unchunked_run(tmp_path):
  base = train.train(tiny_config(), str(tmp_path / "whole"))
  chunked = train.train(tiny_config(**{"model.loss_chunk": 5}), str(tmp_path / "chunked"))
  np.testing.assert_allclose(chunked["loss"], base["loss"], rtol=1e-5)
  assert [r["loss"] for r in read_metrics(tmp_path / "chunked", "val")] == pytest.approx(
      [r["loss"] for r in read_metrics(tmp_path / "whole", "val")], rel=1e-5)
  proc = run_main("--config", "configs/quickstart.py:tiny", "--config.model.loss_chunk=-1", "--workdir",
                  tmp_path / "bad", check=False)
  assert proc.returncode != 0 and "model.loss_chunk=-1 must be >= 0" in proc.stderr


def test_xla_flags_reach_xla_before_it_starts(tmp_path):
  run_main("--config", "configs/quickstart.py:tiny", f"--config.parallel.xla_flags=--xla_dump_to={tmp_path / 'hlo'}",
           "--workdir", tmp_path / "run")
  assert any(name.endswith("after_optimizations.txt") for name in os.listdir(tmp_path / "hlo"))
  from pretrain.errors import ConfigError
  from pretrain.trainer import parallel
  jax.devices()  # This process's backend has started: a flag now would not be read.
  with pytest.raises(ConfigError, match="came after JAX started its backend"):
    parallel.add_xla_flags("--xla_dump_to=/nowhere")
