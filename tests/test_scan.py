"""model.scan_layers: the blocks under nn.scan compute what the unscanned model does, from the same parameters."""
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
  p_plain, p_scanned = plain.init(jax.random.key(1), tokens_BxT), scanned.init(jax.random.key(1), tokens_BxT)
  assert jax.tree_util.tree_map(jnp.shape, p_scanned)["params"]["h"]["block"]["attn"]["c_proj"]["kernel"] == (3, 16, 16)
  for x, y in zip(*map(jax.tree_util.tree_leaves, (gpt.stack_layers(p_plain, 3), p_scanned))):
    np.testing.assert_array_equal(x, y)
  for x, y in zip(*map(jax.tree_util.tree_leaves, (gpt.unstack_layers(p_scanned), p_plain))):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_allclose(scanned.apply(p_scanned, tokens_BxT), plain.apply(p_plain, tokens_BxT), atol=1e-6)
  loss = lambda model: lambda p: jnp.sum(model.apply(p, tokens_BxT, train=True) ** 2) / tokens_BxT.size
  g_plain, g_scanned = jax.grad(loss(plain))(p_plain), jax.grad(loss(scanned))(p_scanned)
  for x, y in zip(*map(jax.tree_util.tree_leaves, (gpt.stack_layers(g_plain, 3), g_scanned))):
    np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5)


def test_a_scanned_run_trains_samples_and_exports_as_the_unscanned_one(tmp_path):
  losses, samples = {}, {}
  for scan in ("false", "true"):
    w = tmp_path / scan
    run_main("--config", "configs/quickstart.py:tiny", f"--config.model.scan_layers={scan}", "--workdir", w)
    losses[scan] = read_metrics(w, "val")[-1]["loss"]
    samples[scan] = run_main("--workdir", w, "--max_new_tokens", "12", "--temperature", "0",
                             module="pretrain.sample").stdout
  assert abs(losses["true"] - losses["false"]) <= 1e-4 * losses["false"]  # f32 sums in another order.
  assert samples["true"] == samples["false"]
