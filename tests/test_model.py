import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pretrain import models
from pretrain.objectives import next_token
from pretrain.models import gpt, positions
from pretrain.models.gpt import GPTConfig


def _model(**kw):
  cfg = dict(vocab_size=11, context=16, num_layers=2, num_heads=2, width=16)
  cfg.update(kw)
  return gpt.GPT(GPTConfig(**cfg))


@pytest.mark.parametrize("kw", [{}, {"bias": True, "tie_embeddings": False}, {"dropout": 0.1}])
def test_gpt_shapes_and_names(kw):
  model = _model(**kw)
  tokens = jnp.zeros((3, 16), jnp.int32)
  params = model.init(jax.random.key(0), tokens)["params"]
  assert model.apply({"params": params}, tokens).shape == (3, 16, 11)
  assert {"wte", "wpe", "h_0", "h_1", "ln_f"} <= set(params)
  assert set(params["h_0"]) == {"ln_1", "attn", "ln_2", "mlp"}
  assert ("lm_head" in params) == (not kw.get("tie_embeddings", True))


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_gpt_is_causal(position):
  """Changing token t+1 never changes the logits at positions <= t."""
  model = _model(position=position)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 11, (2, 16)).astype(np.int32)
  params = model.init(jax.random.key(1), tokens)["params"]
  base = model.apply({"params": params}, tokens)
  for t in range(15):
    changed = tokens.copy()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1 + rng.integers(0, 10, changed[:, t + 1:].shape)) % 11
    out = model.apply({"params": params}, changed)
    np.testing.assert_array_equal(np.asarray(out[:, :t + 1]), np.asarray(base[:, :t + 1]))
    assert not np.allclose(out[:, t + 1:], base[:, t + 1:])


def test_rotary_scores_depend_only_on_the_offset():
  """q_i . k_j after rotation is the same for every (i, j) with the same i - j, and rotation keeps norms."""
  rng = np.random.default_rng(0)
  q_Q, k_Q = rng.normal(size=(2, 8)).astype(np.float32)
  T = 12
  tile = lambda v: jnp.asarray(np.broadcast_to(v, (1, T, 1, 8)))
  rq_TxQ, rk_TxQ = np.asarray(positions.rotary(tile(q_Q)))[0, :, 0], np.asarray(positions.rotary(tile(k_Q)))[0, :, 0]
  scores_TxT = rq_TxQ @ rk_TxQ.T
  for offset in range(-3, 4):
    diagonal = np.diagonal(scores_TxT, offset)
    np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-5, atol=1e-5)
  assert not np.allclose(np.diagonal(scores_TxT, 0)[0], np.diagonal(scores_TxT, 1)[0])
  np.testing.assert_allclose(np.linalg.norm(rq_TxQ, axis=1), np.linalg.norm(q_Q), rtol=1e-5)


def test_rope_model_has_no_position_table():
  model = _model(position="rope")
  params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
  assert "wpe" not in params


def test_dropout_attention_path_is_causal_too():
  model = _model(dropout=0.5)
  tokens = np.arange(16, dtype=np.int32)[None] % 11
  params = model.init(jax.random.key(0), tokens)["params"]
  rngs = {"dropout": jax.random.key(5)}
  base = model.apply({"params": params}, tokens, train=True, rngs=rngs)
  changed = tokens.copy()
  changed[0, 9] = 3
  out = model.apply({"params": params}, changed, train=True, rngs=rngs)
  np.testing.assert_array_equal(np.asarray(out[:, :9]), np.asarray(base[:, :9]))


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = _model(dtype=jnp.bfloat16)
  tokens = jnp.zeros((1, 16), jnp.int32)
  params = model.init(jax.random.key(0), tokens)["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
  assert model.apply({"params": params}, tokens).dtype == jnp.float32


class _FixedLogits:
  """A stand-in model whose logits are given, to check the objective's arithmetic by hand."""
  def __init__(self, logits):
    self.logits = logits

  def apply(self, variables, tokens, train, rngs):
    return self.logits


def test_next_token_objective_by_hand():
  logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))  # B=1, T=2, V=3
  batch = {"tokens": jnp.array([[2, 0, 1]]), "mask": jnp.ones(1), "token_mask": jnp.ones((1, 3))}
  sums, _ = next_token.loss(_FixedLogits(logits), {}, batch, train=False, rng=None)
  assert float(sums["count"]) == 2
  np.testing.assert_allclose(float(sums["loss_sum"]), -np.log(0.5) - np.log(0.8), rtol=1e-6)
  batch["token_mask"] = jnp.array([[1.0, 1.0, 0.0]])  # the second target is padding
  sums, _ = next_token.loss(_FixedLogits(logits), {}, batch, train=False, rng=None)
  assert float(sums["count"]) == 1
  np.testing.assert_allclose(float(sums["loss_sum"]), -np.log(0.5), rtol=1e-6)


def test_flops_per_token_counts_like_nanogpt(tmp_path):
  from tests.conftest import tiny_config
  c = tiny_config()
  # 6N + 12 L H Q T with N = 1000 non-position parameters, wherever the family's network sits.
  params = {"wte": {"embedding": jax.ShapeDtypeStruct((100, 10), jnp.float32)},
            "wpe": {"embedding": jax.ShapeDtypeStruct((7, 1), jnp.float32)}}
  expected = 6 * 1000 + 12 * 1 * 4 * 8 * 32
  assert models.flops_per_token(c, params, forward_flops=None) == expected
  assert models.flops_per_token(c, {"backbone": params}, forward_flops=None) == expected
  lstm = tiny_config(**{"model.family": "lstm"})
  assert models.flops_per_token(lstm, params, forward_flops=None) == 6 * 1007


def test_gelu_is_the_erf_formula_computed_in_float32():
  x = jnp.linspace(-9, 9, 2001)
  for approximate in (False, True):
    # Absolute: below x = -5 both values are under 1e-6, and 1 + erf there cancels to a few ulps (as PyTorch's).
    np.testing.assert_allclose(gpt.gelu(x, approximate), jax.nn.gelu(x, approximate=approximate), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(lambda v: gpt.gelu(v, approximate)))(x),
                               jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=approximate)))(x),
                               rtol=1e-5, atol=1e-6)
  # bfloat16 in, bfloat16 out, rounded once from the float32 value (jax.nn.gelu rounds after every operation).
  x16 = x.astype(jnp.bfloat16)
  out = gpt.gelu(x16, False)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out, gpt.gelu(x16.astype(jnp.float32), False).astype(jnp.bfloat16))


@pytest.mark.parametrize("kw", [{}, {"num_kv_heads": 1, "position": "rope"}])
def test_attention_gradient_has_no_zero_padded_sums(kw):
  """Queries, keys and values are split from c_attn's output, not sliced: a slice's gradient is the cotangent
  zero-padded to the whole width, three of them summed, which XLA:CPU ran as the costliest elementwise
  fusion of the backward pass; a split's gradient is one concatenation."""
  model, tokens = _model(**kw), jnp.zeros((2, 16), jnp.int32)
  params = model.init(jax.random.key(0), tokens)
  hlo = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, tokens) ** 2))).lower(params).as_text()
  assert "stablehlo.pad" not in hlo
