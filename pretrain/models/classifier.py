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


def pool(features, pooling: str):
  """[B, ..., D] -> [B, D]: positions (or pixels) are flattened in order, then averaged or one is taken."""
  if features.ndim == 2:
    return features
  x_BxNxD = features.reshape(features.shape[0], -1, features.shape[-1])
  if pooling == "mean":
    return jnp.mean(x_BxNxD, axis=1)
  if pooling == "last":
    return x_BxNxD[:, -1]
  if pooling == "first":
    return x_BxNxD[:, 0]
  raise ValueError(f"unknown pooling {pooling!r}; known: {POOLINGS}")


class Classifier(nn.Module):
  """inputs -> class logits [B, C] (float32)."""
  backbone: nn.Module
  num_classes: int
  pooling: str = "mean"

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    pooled_BxD = pool(self.backbone.features(inputs, train), self.pooling)
    # A zero head starts every example at the uniform prediction (loss log C), whatever the features' scale.
    head = nn.Dense(self.num_classes, name="head", kernel_init=nn.initializers.zeros)
    return head(pooled_BxD.astype(jnp.float32)).astype(jnp.float32)
