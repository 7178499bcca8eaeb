"""A classification head on any model family's features.

The family's network sits under the name `backbone`, so its parameters keep the names they had in
pretraining behind one prefix (`backbone/h_0/attn/...`) and a pretrained checkpoint maps onto it by name;
the new head is `head`. A family plugs in by giving its module a `features(inputs, train)` method that
returns [B, ..., D] (per position or per pixel) or [B, D] (already pooled), and by listing in a class
attribute `pretraining_only` the regexes of parameters that only its pretraining output layer uses.
"""
import flax.linen as nn
import jax.numpy as jnp

POOLINGS = ("mean", "last", "first", "cls")
BACKBONE = "backbone/"  # Where the family's network's parameters sit under a classifier.


def backbone_prefix(config) -> str:
  """Where the family's network sits in the model the config builds: under BACKBONE for a classifier."""
  return BACKBONE if config.objective == "classification" else ""


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
  if pooling in ("first", "cls"):
    return x_BxNxD[:, 0]
  raise ValueError(f"unknown pooling {pooling!r}; known: {POOLINGS}")


class Classifier(nn.Module):
  """inputs -> class logits [B, C] (float32).

  pooling="cls" is BERT's: `cls_id` (the tokenizer's [CLS]) goes before every text, which gives up its last
  token to keep its length, and the features at that position pass through the backbone's `pool` (BERT's
  pooler: dense + tanh) when it has one."""
  backbone: nn.Module
  num_classes: int
  pooling: str = "mean"
  cls_id: int = -1

  @nn.compact
  def __call__(self, inputs, train: bool = False, positions_mask=None):
    if self.pooling == "cls":
      inputs = jnp.concatenate([jnp.full_like(inputs[:, :1], self.cls_id), inputs[:, :-1]], axis=1)
      positions_mask = None  # Position 0 is read, whatever follows.
    pooled_BxD = pool(self.backbone.features(inputs, train), self.pooling, positions_mask)
    if self.pooling == "cls" and hasattr(self.backbone, "pool"):
      pooled_BxD = self.backbone.pool(pooled_BxD)
    # A zero head starts every example at the uniform prediction (loss log C), whatever the features' scale.
    head = nn.Dense(self.num_classes, name="head", kernel_init=nn.initializers.zeros)
    return head(pooled_BxD.astype(jnp.float32)).astype(jnp.float32)
