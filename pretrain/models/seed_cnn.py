"""The seed design's CNN: Conv 32 3x3 relu, MaxPool 2, Conv 64 3x3 relu, MaxPool 2, Conv 64 3x3 relu,
Flatten, Dense 64 relu, then Dense 10 logits.

`features` is the network up to the Dense 64 relu; the last layer, Dense(num_classes) logits, is the
classification head that objective="classification" puts on the features (models/classifier.py), so
the trained module is exactly the design's network and a pretrained backbone transfers with a new head.
Convolutions are unpadded ("VALID", as Keras's default): 32x32 inputs flatten to 4x4x64, 28x28 to 3x3x64;
any image of at least 18x18 works.
"""
import flax.linen as nn
import jax.numpy as jnp

from pretrain.errors import ConfigError

OBJECTIVES = ()  # Trained only under a classification head.
INPUTS = "image"
MIN_SIZE = 18  # Smallest side whose third convolution still has an output: ((s - 2) // 2 - 2) // 2 - 2 >= 1.


def build(config, dataset, data_axis=None):
  del config, dataset, data_axis
  return SeedCNN()


def flops_per_token(config, params, forward_flops) -> float:
  """Per image: a convolution reuses each weight at every pixel, so 3x the forward pass's FLOPs as XLA counts them."""
  del config, params
  return 3 * forward_flops()


class SeedCNN(nn.Module):
  """images [B, H, W, C] -> features [B, 64]."""
  hidden: int = 64
  pretraining_only = ()  # Trained with a head only; nothing is specific to its pretraining.

  @nn.compact
  def features(self, image_BxHxWxC, train: bool = False):
    del train  # No dropout or normalization: the same function in training and evaluation.
    if min(image_BxHxWxC.shape[1:3]) < MIN_SIZE:
      raise ConfigError(f"seed_cnn needs images of at least {MIN_SIZE}x{MIN_SIZE}, got "
                        f"{image_BxHxWxC.shape[1]}x{image_BxHxWxC.shape[2]}; add --config.data.preprocess=pad:P or "
                        "resize:S")
    x = image_BxHxWxC.astype(jnp.float32)
    x = nn.relu(nn.Conv(32, (3, 3), padding="VALID")(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x))
    x = x.reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(self.hidden)(x))

  def __call__(self, image_BxHxWxC, train: bool = False):
    return self.features(image_BxHxWxC, train)
