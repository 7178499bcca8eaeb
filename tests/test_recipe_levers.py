"""The speedrun's levers (configs/shakespeare_char.py:speedrun), each a config field doing what it says."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pretrain import configlib, errors
from pretrain.trainer import optim
from pretrain.models import gpt
from pretrain.models.gpt import GPTConfig
from tests.conftest import ROOT, tiny_config

_TINY_GPT = GPTConfig(vocab_size=11, context=8, num_layers=1, num_heads=2, width=16)


def _params():
  model = gpt.GPT(dataclasses.replace(_TINY_GPT, tie_embeddings=False))
  return model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]


def test_muon_takes_dense_kernels_and_adamw_the_rest():
  params = _params()
  config = tiny_config(**{"optim.name": "muon", "optim.warmup_steps": 0, "optim.muon_lr": 0.05, "optim.lr": 0.01,
                          "optim.weight_decay": 0.0, "optim.grad_clip": 0})
  tx = optim.make(config)
  rng = np.random.default_rng(0)
  grads = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  flat = {optim.param_name(path): np.asarray(u) for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]}
  for name, u in flat.items():
    if name.endswith("kernel") and not name.startswith("lm_head"):
      # Orthogonalised momentum: every singular value of the update is about the same (Newton-Schulz ends
      # within ~[0.7, 1.2] of the target), unlike a Gaussian gradient's spread of singular values.
      s = np.linalg.svd(u, compute_uv=False)
      assert s.max() / s.min() < 2.0, name
    else:
      # AdamW's first step moves every coordinate by about lr (sign of the gradient).
      np.testing.assert_allclose(np.abs(u), 0.01, rtol=1e-3, err_msg=name)
  g = np.asarray(grads["h_0"]["mlp"]["c_fc"]["kernel"])
  assert np.linalg.svd(g, compute_uv=False).max() / np.linalg.svd(g, compute_uv=False).min() > 2.0


def test_muon_exclude_and_bad_optimizer_name():
  params = _params()
  config = tiny_config(**{"optim.name": "muon", "optim.muon_exclude": "('^lm_head/', 'c_fc')", "optim.warmup_steps": 0,
                          "optim.lr": 0.01, "optim.weight_decay": 0.0, "optim.grad_clip": 0})
  tx = optim.make(config)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(np.abs(np.asarray(updates["h_0"]["mlp"]["c_fc"]["kernel"])), 0.01, rtol=1e-3)
  with pytest.raises(errors.ConfigError, match="optim.name='lion' must be one of"):
    optim.make(tiny_config(**{"optim.name": "lion"}))


def test_wsd_schedule_warms_up_holds_and_cools_down_linearly():
  config = tiny_config(**{"train.steps": 100, "optim.schedule": "wsd", "optim.warmup_steps": 10, "optim.lr": 1.0,
                          "optim.min_lr": 0.1, "optim.cooldown_fraction": 0.4})
  lr = optim.learning_rate(config)
  values = np.array([float(lr(s)) for s in range(101)])
  np.testing.assert_allclose(values[[0, 5, 10, 30, 60]], [1 / 11, 6 / 11, 1.0, 1.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(values[[80, 100]], [0.55, 0.1], atol=1e-6)
  assert np.all(np.diff(values[60:]) < 0)
  muon = optim.learning_rate(config, peak=0.02)
  np.testing.assert_allclose([float(muon(s)) for s in (30, 100)], [0.02, 0.002], atol=1e-7)
  with pytest.raises(errors.ConfigError, match="optim.schedule='step' must be one of"):
    optim.learning_rate(tiny_config(**{"optim.schedule": "step"}))


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
  for qk_norm in (False, True):
    model = gpt.CausalSelfAttention(dataclasses.replace(_TINY_GPT, qk_norm=qk_norm, position="rope"))
    x = jax.random.normal(jax.random.key(1), (2, 8, 16))
    variables = model.init(jax.random.key(0), x, train=False)
    kernel = variables["params"]["c_attn"]["kernel"]
    scaled = {"params": {**variables["params"], "c_attn": {"kernel": kernel.at[:, :32].multiply(5.0)}}}
    same = np.allclose(model.apply(variables, x, train=False), model.apply(scaled, x, train=False), atol=1e-5)
    assert same == qk_norm


def test_relu2_mlp_is_the_square_of_relu():
  config = dataclasses.replace(_TINY_GPT, activation="relu2", bias=True)
  mlp = gpt.MLP(config)
  x = jax.random.normal(jax.random.key(1), (2, 8, 16))
  v = mlp.init(jax.random.key(0), x, train=False)
  p = jax.tree_util.tree_map(np.asarray, v["params"])
  h = np.maximum(x @ p["c_fc"]["kernel"] + p["c_fc"]["bias"], 0) ** 2
  np.testing.assert_allclose(mlp.apply(v, x, train=False), h @ p["c_proj"]["kernel"] + p["c_proj"]["bias"],
                             rtol=1e-4, atol=1e-5)
  with pytest.raises(errors.ConfigError, match="model.activation='swish' must be one of"):
    from pretrain import models
    gpt.gpt_config(tiny_config(**{"model.activation": "swish"}), type("D", (), {"vocab_size": 11})())


def test_zero_head_starts_at_the_uniform_prediction():
  model = gpt.GPT(dataclasses.replace(_TINY_GPT, tie_embeddings=False, head_init="zeros"))
  tokens = jnp.arange(8)[None] % 11
  variables = model.init(jax.random.key(0), tokens)
  np.testing.assert_array_equal(model.apply(variables, tokens), 0.0)
  assert np.abs(variables["params"]["wte"]["embedding"]).max() > 0


def test_compilation_cache_serves_a_rerun(tmp_path):
  """A second run of the same config loads its compiled steps from train.compilation_cache's directory."""
  script = textwrap.dedent(f"""
      import json, sys
      import jax
      from pretrain.trainer import train
      from tests.conftest import tiny_config
      hits = []
      jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event))
      config = tiny_config(**{{"train.steps": 10, "train.log_every": 10, "train.eval_every": 10}})
      train.train(config, {str(tmp_path / 'a')!r})
      before = hits.count("/jax/compilation_cache/cache_hits")
      train.train(config, {str(tmp_path / 'b')!r})
      print(json.dumps([before, hits.count("/jax/compilation_cache/cache_hits") - before]))
      """)
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["PRETRAIN_COMPILATION_CACHE"] = str(tmp_path / "cache")
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
  first, second = json.loads(out.stdout.strip().splitlines()[-1])
  assert first == 0 and second >= 2  # At least the train and eval steps.
  assert any(name.startswith("jit_") for name in os.listdir(tmp_path / "cache"))


def test_speedrun_config_is_a_valid_gpt(tmp_path):
  (tmp_path / "input.txt").write_text("to be or not to be\n" * 50)
  config = configlib.load(os.path.join(ROOT, "configs/shakespeare_char.py:speedrun"),
                          [("data.path", str(tmp_path / "input.txt"))])
  configlib.validate(config, num_devices=1)
  assert config.optim.name == "muon" and config.eval.batches == 0  # Its one evaluation covers the whole split.
