"""bfloat16 matmuls in the one form XLA:CPU runs in its fast kernels (model.bf16_matmul).

XLA:CPU gives a dot to YNNPACK when its operands are bfloat16 and its result float32; a dot whose result is
bfloat16 (what `x @ w` in bfloat16 is) it widens to float32 first, and so it does with any dot whose left
operand is contracted over a leading dimension, the form of every weight gradient. On a CPU with
AVX512-BF16 the bf16 kernels do twice the float32 ones' work per second (BENCHMARKS.md).

`matmul(x, w)` is x @ w as XLA computes a bfloat16 dot anyway (products summed in float32, the sum rounded
to x's dtype), in that form in the forward pass and in both gradients. Elsewhere (float32 models, GPUs,
TPUs) the plain dot is the fast one, and "auto" keeps it there.
"""
import jax
import jax.numpy as jnp

MODES = ("auto", "f32_accumulate", "native")


def resolve(mode: str, dtype) -> bool:
  """Whether bfloat16 matmuls go through `matmul`: "f32_accumulate" always, "native" never, "auto" on CPU.
  Only a bfloat16 model has any to reroute."""
  if jnp.dtype(dtype) != jnp.bfloat16 or mode == "native":
    return False
  return mode == "f32_accumulate" or jax.default_backend() == "cpu"


def _dot(x_NxK, w_KxM):
  """x [..., K] @ w [K, M] into float32, rounded to x's dtype."""
  out = jax.lax.dot_general(x_NxK, w_KxM, (((x_NxK.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  return out.astype(x_NxK.dtype)


@jax.custom_vjp
def matmul(x_NxK, w_KxM):
  return _dot(x_NxK, w_KxM)


def _forward(x_NxK, w_KxM):
  return _dot(x_NxK, w_KxM), (x_NxK, w_KxM)


def _backward(residuals, g_NxM):
  x_NxK, w_KxM = residuals
  K, M = w_KxM.shape
  x_BxTxK = x_NxK.reshape(-1, *x_NxK.shape[-2:]) if x_NxK.ndim > 2 else x_NxK[None]  # A 2-D input: one row.
  B, T = x_BxTxK.shape[:2]
  # The weight gradient sums x^T g over rows and positions; its left operand must lie [K, positions] in
  # memory, so each row's transpose is a copy (flattened, so that it cannot become a mere change of layout;
  # per row, so that the batch axis keeps its sharding). The barrier keeps XLA from folding the transpose
  # back and from using the float32 value the cotangent was rounded from: either makes a float32 dot again.
  x_BxKT, g_BxTxM = jax.lax.optimization_barrier(
      (jnp.swapaxes(x_BxTxK, 1, 2).reshape(B, K * T), g_NxM.astype(x_NxK.dtype).reshape(B, T, M)))
  dx_NxK = _dot(g_BxTxM, w_KxM.T).reshape(x_NxK.shape)  # A transposed right operand is a form YNNPACK takes.
  dw_KxM = jax.lax.dot_general(x_BxKT.reshape(B, K, T), g_BxTxM, (((0, 2), (0, 1)), ((), ())),
                               preferred_element_type=jnp.float32)
  return dx_NxK, dw_KxM.astype(w_KxM.dtype)


matmul.defvjp(_forward, _backward)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """nn.Dense's `dot_general`: its one contraction (the input's last axis with the kernel's first) through
  `matmul`; any other call as lax.dot_general."""
  if dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())) and rhs.ndim == 2 and lhs.dtype == rhs.dtype:
    return matmul(lhs, rhs)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type)
