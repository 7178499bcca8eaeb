"""model.bf16_matmul: bfloat16 matmuls in the form XLA:CPU's fast kernels take, with XLA's own results."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from pretrain.models import gpt, matmul

BF16_ULP = 2.0 ** -8  # Relative spacing of bfloat16 numbers: each result is rounded once to it.


def _bf16(key, shape, scale=1.0):
  return (jax.random.normal(jax.random.key(key), shape) * scale).astype(jnp.bfloat16)


@pytest.mark.parametrize("shape", [(3, 16, 24), (40, 24)])
def test_values_and_gradients_are_the_float32_products_rounded_once(shape):
  x, w, g = _bf16(0, shape), _bf16(1, (24, 32), 0.2), _bf16(2, shape[:-1] + (32,))
  out, pullback = jax.vjp(matmul.matmul, x, w)
  dx, dw = pullback(g)
  f32 = lambda a: np.asarray(a, np.float32)
  x2, g2 = f32(x).reshape(-1, 24), f32(g).reshape(-1, 32)
  for got, want in [(out, f32(x) @ f32(w)), (dx, f32(g) @ f32(w).T), (dw, x2.T @ g2)]:
    assert got.dtype == jnp.bfloat16 and got.shape == want.shape
    np.testing.assert_allclose(f32(got), want, rtol=BF16_ULP, atol=1e-6 * np.abs(want).max())


def _gpt(mode, **extra):
  config = dict(vocab_size=65, context=16, num_layers=2, num_heads=2, width=32, position="rope", dtype=jnp.bfloat16,
                bf16_matmul=matmul.resolve(mode, jnp.bfloat16), **extra)
  return gpt.GPT(gpt.GPTConfig(**config))


def _loss_and_grads(model, params, tokens_BxT):
  def loss(p):
    logits_BxTxV = model.apply(p, tokens_BxT[:, :-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits_BxTxV), tokens_BxT[:, 1:, None], -1))
  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("extra", [{}, {"tie_embeddings": False}, {"remat": "dots"}, {"scan_layers": True}])
def test_a_bf16_gpt_computes_what_xlas_own_dots_compute(extra):
  tokens_BxT = jax.random.randint(jax.random.key(0), (4, 17), 0, 65)
  fast, native = _gpt("f32_accumulate", **extra), _gpt("native", **extra)
  params = native.init(jax.random.key(1), tokens_BxT[:, :-1])
  (loss_fast, grads_fast), (loss_native, grads_native) = (_loss_and_grads(m, params, tokens_BxT) for m in (fast, native))
  np.testing.assert_allclose(loss_fast, loss_native, rtol=1e-3)
  for a, b in zip(jax.tree_util.tree_leaves(grads_fast), jax.tree_util.tree_leaves(grads_native)):
    # Both round every product to bfloat16; they may sum in different orders, so a few roundings differ.
    np.testing.assert_allclose(a, b, rtol=0.05, atol=0.02 * np.abs(b).max())


def _float32_matrix_dots(hlo: str) -> int:
  """Dots in compiled CPU HLO whose operands are 2-D float32 (the widened form of a bfloat16 matmul)."""
  return len(re.findall(r"\(param_\S+: f32\[\d+,\d+\], param_\S+: f32\[\d+,\d+\]\) -> f32\[\d+,\d+\] \{\n"
                        r"(?:[^\n]*\n){0,2}\s*ROOT \S+ = \S+ dot\(", hlo))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="what XLA:CPU compiles")
def test_every_dense_dot_of_a_training_step_stays_bfloat16_on_cpu():
  tokens_BxT = jax.random.randint(jax.random.key(0), (4, 17), 0, 65)
  hlo = {}
  for mode in ("auto", "native"):
    model = _gpt(mode)
    params = model.init(jax.random.key(1), tokens_BxT[:, :-1])
    step = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, tokens_BxT[:, :-1]) ** 2)))
    hlo[mode] = step.lower(params).compile().as_text()
  assert _float32_matrix_dots(hlo["native"]) >= 8  # Forward and both gradients of 4 dense layers and the head.
  assert _float32_matrix_dots(hlo["auto"]) == 0


def _dots(jaxpr) -> list:
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn)
    for value in eqn.params.values():  # Inner jaxprs: custom VJPs, remat, scan bodies.
      inner = getattr(value, "jaxpr", value)
      if hasattr(inner, "eqns"):
        found += _dots(inner)
  return found


@pytest.mark.parametrize("extra", [{}, {"num_kv_heads": 1}, {"dropout": 0.1}])
def test_no_dot_of_a_training_step_returns_bfloat16(extra):
  """The form XLA:CPU widens to float32: a bf16 result. Dense layers multiply bf16 into float32; attention,
  whose dots it would widen anyway, computes in float32 (also where dropout writes it out)."""
  tokens_BxT = jax.random.randint(jax.random.key(0), (4, 17), 0, 65)
  model = _gpt("f32_accumulate", **extra)
  params = model.init(jax.random.key(1), tokens_BxT[:, :-1])
  loss = lambda p: jnp.sum(model.apply(p, tokens_BxT[:, :-1], train=True, rngs={"dropout": jax.random.key(2)}) ** 2)
  jaxpr = jax.make_jaxpr(jax.grad(loss))(params)
  dots = _dots(jaxpr.jaxpr)
  assert len(dots) >= 2 * 3 * 6  # Per layer: 4 dense layers and 2 attention products, each forward and 2 gradients.
  assert [d for d in dots if d.outvars[0].aval.dtype == jnp.bfloat16] == []


def test_the_weight_gradient_keeps_the_batch_sharding():
  """Under a data x tensor mesh the weight gradient is summed across the data axis (one all-reduce), never
  gathered: the per-row transposes keep the batch axis sharded."""
  mesh = jax.make_mesh((2, 2), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2, devices=jax.devices()[:4])
  x = jax.device_put(_bf16(0, (8, 16, 32)), NamedSharding(mesh, P("data", None, None)))
  w = jax.device_put(jax.random.normal(jax.random.key(1), (32, 48)), NamedSharding(mesh, P(None, "tensor")))
  grad = jax.jit(jax.grad(lambda w, x: jnp.sum(matmul.matmul(x, w.astype(jnp.bfloat16)).astype(jnp.float32) ** 2)))
  hlo = grad.lower(w, x).compile().as_text()
  assert "all-gather(" not in hlo and "all-to-all(" not in hlo and "all-reduce(" in hlo
  np.testing.assert_allclose(grad(w, x), jax.grad(lambda w: jnp.sum(
      matmul.matmul(np.asarray(x), w.astype(jnp.bfloat16)).astype(jnp.float32) ** 2))(np.asarray(w)), rtol=0.02, atol=1e-2)


def test_auto_reroutes_only_bfloat16_models_on_cpu():
  assert matmul.resolve("auto", jnp.bfloat16) == (jax.default_backend() == "cpu")
  assert not matmul.resolve("auto", jnp.float32) and not matmul.resolve("f32_accumulate", jnp.float32)
  assert matmul.resolve("f32_accumulate", jnp.bfloat16) and not matmul.resolve("native", jnp.bfloat16)
