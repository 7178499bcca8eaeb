"""Where each token is: rotary position embeddings (RoFormer, with Llama-3's and linear rescaling) and positions
that restart at every document of a packed row. Tensor names carry shapes as in gpt.py (F = Q / 2 frequencies)."""
import math

import jax
import jax.numpy as jnp
import numpy as np


def rope_frequencies(Q: int, theta: float = 10000.0, scaling: tuple = ()) -> np.ndarray:
  """The Q/2 rotary frequencies theta^(-2i/Q) (float32, computed as Transformers does), rescaled as `scaling`
  says: "linear" divides them all by the factor; "llama3" divides the low ones (wavelengths past
  original_context / low_freq_factor) by it, keeps the high ones (below original_context / high_freq_factor)
  and interpolates between."""
  inv_freq = (np.float32(1.0) / (np.float32(theta) ** (np.arange(0, Q, 2).astype(np.float32) / np.float32(Q))))
  if not scaling:
    return inv_freq
  kind, factor, *rest = scaling
  if kind == "linear":
    return (inv_freq / np.float32(factor)).astype(np.float32)
  low, high, original = rest
  wavelength = 2 * math.pi / inv_freq
  scaled = np.where(wavelength > original / low, inv_freq / factor, inv_freq)
  smooth = (original / wavelength - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = ~(wavelength < original / high) & ~(wavelength > original / low)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def rotary(x_BxTxHxQ, positions_BxT=None, base: float = 10000.0, scaling: tuple = ()):
  """Rotary position embedding (RoFormer): each pair (x_i, x_{i+Q/2}) of a head turns by the angle
  t * base^(-2i/Q) at position t, so a query-key product depends on the offset between their positions only.
  positions_BxT: each token's position t; default 0..T-1 (a cache's later tokens and left-padded rows differ)."""
  T, Q = x_BxTxHxQ.shape[1], x_BxTxHxQ.shape[3]
  inv_freq_F = rope_frequencies(Q, base, scaling)
  if positions_BxT is None:
    # Constants: XLA:CPU would otherwise recompute sin and cos inside every fusion that reads them.
    angle_BxTxF = (np.arange(T, dtype=np.float32)[:, None] * inv_freq_F[None])[None]
    cos_BxTx1xF, sin_BxTx1xF = np.cos(angle_BxTxF)[:, :, None], np.sin(angle_BxTxF)[:, :, None]
  else:
    angle_BxTxF = positions_BxT.astype(jnp.float32)[:, :, None] * jnp.asarray(inv_freq_F)[None, None]
    cos_BxTx1xF, sin_BxTx1xF = jnp.cos(angle_BxTxF)[:, :, None], jnp.sin(angle_BxTxF)[:, :, None]
  a_BxTxHxF, b_BxTxHxF = jnp.split(x_BxTxHxQ.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([a_BxTxHxF * cos_BxTx1xF - b_BxTxHxF * sin_BxTx1xF,
                             b_BxTxHxF * cos_BxTx1xF + a_BxTxHxF * sin_BxTx1xF], axis=-1)
  return rotated.astype(x_BxTxHxQ.dtype)


def segment_positions(segment_ids_BxT):
  """Each token's position within its document (segment ids non-decreasing along a row)."""
  T = segment_ids_BxT.shape[1]
  starts_BxT = jnp.concatenate([jnp.ones_like(segment_ids_BxT[:, :1], bool),
                                segment_ids_BxT[:, 1:] != segment_ids_BxT[:, :-1]], axis=1)
  first_BxT = jax.lax.cummax(jnp.where(starts_BxT, jnp.arange(T), 0), axis=1)
  return jnp.arange(T) - first_BxT
