"""model.scan_layers: the blocks under nn.scan compute what the unscanned model does, from the same parameters."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import read_metrics, run_main
from pretrain.models import gpt

SHAPES = {"gpt2": dict(), "llama": dict(norm="rmsnorm", activation="swiglu", num_kv_heads=1, position="rope",
                                        tie_embeddings=False)}


@pytest.mark.parametrize("remat", ["none", "full"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_scanned_blocks_start_from_the_same_parameters_and_compute_the_same(shape, remat):
  config = dict(vocab_size=61, context=16, num_layers=3, num_heads=2, width=16, remat=remat, **SHAPES[shape])
  plain, scanned = gpt.GPT(gpt.GPTConfig(**config)), gpt.GPT(gpt.GPTConfig(**config, scan_layers=True))
  tokens_BxT = jax.random.randint(jax.random.key(0), (2, 16), 0, 61)
  p_plain = plain.init(jax.random.key(1), tokens_BxT)
  p_scanned = gpt.stack_layers(p_plain, 3)  # The unscanned model's parameters, in the scanned layout.
  shapes = jax.tree_util.tree_map(jnp.shape, scanned.init(jax.random.key(1), tokens_BxT))
  assert shapes == jax.tree_util.tree_map(jnp.shape, p_scanned)
  assert shapes["params"]["h"]["block"]["attn"]["c_proj"]["kernel"] == (3, 16, 16)
  for x, y in zip(*map(jax.tree_util.tree_leaves, (gpt.unstack_layers(p_scanned), p_plain))):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_allclose(scanned.apply(p_scanned, tokens_BxT), plain.apply(p_plain, tokens_BxT), atol=1e-6)
  loss = lambda model: lambda p: jnp.sum(model.apply(p, tokens_BxT, train=True) ** 2) / tokens_BxT.size
  g_plain, g_scanned = jax.grad(loss(plain))(p_plain), jax.grad(loss(scanned))(p_scanned)
  for x, y in zip(*map(jax.tree_util.tree_leaves, (gpt.stack_layers(g_plain, 3), g_scanned))):
    np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5)


def test_a_scanned_bert_computes_what_the_unscanned_one_does():
  from pretrain.models import bert
  config = dict(vocab_size=40, context=16, num_layers=2, num_heads=2, width=16, causal=False, norm_position="post")
  plain = bert.BERT(gpt.GPTConfig(**config), mask_id=39, type_vocab_size=2, pooler=True)
  scanned = bert.BERT(gpt.GPTConfig(**config, scan_layers=True), mask_id=39, type_vocab_size=2, pooler=True)
  tokens_BxT = jax.random.randint(jax.random.key(0), (2, 16), 0, 39)
  p_plain = plain.init(jax.random.key(1), tokens_BxT)
  p_scanned = gpt.stack_layers(p_plain, 2)
  assert jax.tree_util.tree_map(jnp.shape, scanned.init(jax.random.key(1), tokens_BxT)) == \
      jax.tree_util.tree_map(jnp.shape, p_scanned)
  np.testing.assert_allclose(scanned.apply(p_scanned, tokens_BxT), plain.apply(p_plain, tokens_BxT), atol=1e-5)


def test_a_scanned_run_trains_samples_and_converts_to_the_unscanned_layout(tmp_path):
  from pretrain.trainer import run_dir
  losses = {}
  for scan in ("false", "true"):
    run_main("--config", "configs/quickstart.py:tiny", f"--config.model.scan_layers={scan}", "--workdir", tmp_path / scan)
    losses[scan] = read_metrics(tmp_path / scan, "val")[-1]["loss"]
  assert abs(losses["true"] - losses["false"]) <= 0.02 * losses["false"]  # Another draw of the initial weights.
  assert run_main("--workdir", tmp_path / "true", "--max_new_tokens", "8", module="pretrain.sample").returncode == 0
  run = run_dir.load(str(tmp_path / "true"))
  plain = gpt.GPT(dataclasses.replace(run.model.config, scan_layers=False))
  tokens_BxT = jnp.arange(32, dtype=jnp.int32).reshape(2, 16) % run.model.config.vocab_size
  np.testing.assert_allclose(plain.apply({"params": gpt.unstack_layers(run.params)}, tokens_BxT),
                             run.model.apply({"params": run.params}, tokens_BxT), atol=1e-5)
