"""A classification head on any model family's features.

The family's network sits under the name `backbone`, so its parameters keep the names they had in
pretraining behind one prefix (`backbone/h_0/attn/...`) and a pretrained checkpoint maps onto it by name;
the new head is `head`. A family plugs in by giving its module a `features(inputs, train)` method that
returns [B, ..., D] (per position or per pixel) or [B, D] (already pooled), and by listing in a class
attribute `pretraining_only` the regexes of parameters that only its pretraining output layer uses.
"""
import flax.linen as nn
import jax.numpy as jnp

POOLINGS = ("mean", "last", "first")


def pool(features, pooling: str, positions_mask=None):
  """[B, ..., D] -> [B, D]: positions (or pixels) are flattened in order, then averaged or one is taken.
  positions_mask [B, N] (1 for real positions, 0 for padding after them) restricts both to the real ones."""
  if features.ndim == 2:
    return features
  x_BxNxD = features.reshape(features.shape[0], -1, features.shape[-1])
  if pooling == "mean":
    if positions_mask is None:
      return jnp.mean(x_BxNxD, axis=1)
    m_BxN = positions_mask.astype(x_BxNxD.dtype)
    return jnp.sum(x_BxNxD * m_BxN[..., None], axis=1) / jnp.maximum(jnp.sum(m_BxN, axis=1), 1)[:, None]
  if pooling == "last":
    if positions_mask is None:
      return x_BxNxD[:, -1]
    last_B = jnp.maximum(jnp.sum(positions_mask, axis=1).astype(jnp.int32) - 1, 0)
    return jnp.take_along_axis(x_BxNxD, last_B[:, None, None], axis=1)[:, 0]
  if pooling == "first":
    return x_BxNxD[:, 0]
  raise ValueError(f"unknown pooling {pooling!r}; known: {POOLINGS}")


class Classifier(nn.Module):
  """inputs -> class logits [B, C] (float32)."""
  backbone: nn.Module
  num_classes: int
  pooling: str = "mean"

  @nn.compact
  def __call__(self, inputs, train: bool = False, positions_mask=None):
    pooled_BxD = pool(self.backbone.features(inputs, train), self.pooling, positions_mask)
    # A zero head starts every example at the uniform prediction (loss log C), whatever the features' scale.
    head = nn.Dense(self.num_classes, name="head", kernel_init=nn.initializers.zeros)
    return head(pooled_BxD.astype(jnp.float32)).astype(jnp.float32)
