"""PixelCNN (van den Oord et al. 2016): an autoregressive image model from masked convolutions.

p(x) = prod_i p(x_i | x_<i) over sub-pixels in raster order: rows top to bottom, columns left to right,
then channels in order. A mask-A 7x7 convolution sees only strictly earlier sub-pixels, the mask-B layers
after it (residual blocks of 1x1, 3x3, 1x1) may also see their own position's earlier channel groups, so
the logits for sub-pixel i depend on x_<i only. Hidden channels are split into one group per image channel
(width must be a multiple of C). Inputs are integer levels in [0, levels); the output is a categorical
over the levels for every sub-pixel, [B, H, W, C, levels] (with levels=2, a Bernoulli).
"""
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from pretrain.errors import ConfigError

OBJECTIVES = ("pixels",)
INPUTS = "image"


def build(config, dataset, data_axis=None):
  del data_axis
  return PixelCNN(levels=dataset.vocab_size, width=config.model.width, num_layers=config.model.num_layers,
                  channels=dataset.image_channels)


def flops_per_token(config, params, forward_flops) -> float:
  """Per image: a convolution reuses each weight at every pixel, so 3x the forward pass's FLOPs as XLA counts them."""
  del config, params
  return 3 * forward_flops()


def causal_mask(kernel_hw, in_features, out_features, channels, mask_type):
  """The [kh, kw, in, out] 0/1 mask: taps above, taps left in the centre row, and at the centre the
  channel groups before (type A) or up to (type B) the output's group."""
  kh, kw = kernel_hw
  mask = np.ones((kh, kw, in_features, out_features), np.float32)
  mask[kh // 2 + 1:] = 0
  mask[kh // 2, kw // 2 + 1:] = 0
  group_in = np.arange(in_features) * channels // in_features
  group_out = np.arange(out_features) * channels // out_features
  allowed = group_in[:, None] < group_out[None] if mask_type == "A" else group_in[:, None] <= group_out[None]
  mask[kh // 2, kw // 2] = allowed
  return mask


class MaskedConv(nn.Module):
  features: int
  kernel_hw: tuple
  mask_type: str
  channels: int

  @nn.compact
  def __call__(self, x):
    mask = causal_mask(self.kernel_hw, x.shape[-1], self.features, self.channels, self.mask_type)
    return nn.Conv(self.features, self.kernel_hw, padding="SAME", mask=jnp.asarray(mask), name="conv")(x)


class ResidualBlock(nn.Module):
  width: int
  channels: int

  @nn.compact
  def __call__(self, x):
    h = MaskedConv(self.width // 2, (1, 1), "B", self.channels)(nn.relu(x))
    h = MaskedConv(self.width // 2, (3, 3), "B", self.channels)(nn.relu(h))
    h = MaskedConv(self.width, (1, 1), "B", self.channels)(nn.relu(h))
    return x + h


class PixelCNN(nn.Module):
  """integer images [B, H, W, C] -> logits [B, H, W, C, levels] (float32)."""
  levels: int
  width: int
  num_layers: int
  channels: int = 1  # C of the images: one group of hidden channels each.
  pretraining_only = ("^out_",)

  def setup(self):
    if self.width % (2 * self.channels):
      raise ConfigError(f"pixelcnn: model.width={self.width} must be a multiple of 2 x {self.channels} image channels")
    self.in_conv = MaskedConv(self.width, (7, 7), "A", self.channels)
    self.blocks = [ResidualBlock(self.width, self.channels, name=f"block_{i}") for i in range(self.num_layers)]
    self.out_hidden = MaskedConv(self.width, (1, 1), "B", self.channels)
    self.out_logits = MaskedConv(self.channels * self.levels, (1, 1), "B", self.channels)

  def features(self, image_BxHxWxC, train: bool = False):
    """Hidden maps [B, H, W, width]; the vector at a pixel has read only the pixels before it."""
    del train
    if not jnp.issubdtype(image_BxHxWxC.dtype, jnp.integer):
      raise ConfigError("pixelcnn reads integer pixel levels; drop 'scale' from --config.data.preprocess")
    x = image_BxHxWxC.astype(jnp.float32) / (self.levels - 1) * 2 - 1
    x = self.in_conv(x)
    for block in self.blocks:
      x = block(x)
    return nn.relu(x)

  def __call__(self, image_BxHxWxC, train: bool = False):
    B, H, W, C = image_BxHxWxC.shape
    x = nn.relu(self.out_hidden(self.features(image_BxHxWxC, train)))
    return self.out_logits(x).reshape(B, H, W, C, self.levels).astype(jnp.float32)
