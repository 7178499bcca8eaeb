"""CIFAR-style ResNets (He et al. 2016): a 3x3 stem and stages of basic blocks, no max-pool.

ResNet-20: stage_sizes (3, 3, 3), widths (16, 32, 64); ResNet-18 (the CIFAR variant): (2, 2, 2, 2),
(64, 128, 256, 512). A stage after the first halves the resolution in its first block; where the shape
changes, the shortcut is a 1x1 convolution with BatchNorm (projection shortcut).

BatchNorm keeps its running statistics in the `batch_stats` collection, i.e. in TrainState.model_state:
training normalizes with the batch's statistics and returns updated running averages (objectives.apply),
evaluation uses the running averages and changes nothing.

One meaning under every strategy: the statistics are those of the whole global (micro-)batch. Under
`single` and `mesh` that is what the jitted step sees; under `pmap` (`data_axis="batch"`) BatchNorm
averages its moments over devices (synchronised BatchNorm), so every device normalizes alike and keeps the
same running averages. With gradient accumulation each micro-batch is normalized with its own statistics
and updates the running averages once, as a PyTorch loop that accumulates would.
"""
import functools

import flax.linen as nn
import jax.numpy as jnp

from pretrain.errors import ConfigError

OBJECTIVES = ()  # Trained only under a classification head.
INPUTS = "image"


def build(config, dataset, data_axis=None):
  del dataset
  m = config.model
  if len(m.stage_sizes) != len(m.stage_widths) or not m.stage_sizes:
    raise ConfigError(f"model.stage_sizes={tuple(m.stage_sizes)} and model.stage_widths={tuple(m.stage_widths)} "
                      "need one entry per stage each")
  return ResNet(tuple(m.stage_sizes), tuple(m.stage_widths), data_axis=data_axis)


def flops_per_token(config, params, forward_flops) -> float:
  """Per image: a convolution reuses each weight at every pixel, so 3x the forward pass's FLOPs as XLA counts them."""
  del config, params
  return 3 * forward_flops()


def _norm(train, data_axis, name=None, zero=False):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name, axis_name=data_axis,
                      scale_init=nn.initializers.zeros if zero else nn.initializers.ones)


class BasicBlock(nn.Module):
  width: int
  stride: int
  data_axis: str | None = None

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=nn.initializers.he_normal())
    y = conv(self.width, (3, 3), strides=self.stride, padding=1)(x_BxHxWxC)
    y = nn.relu(_norm(train, self.data_axis)(y))
    y = conv(self.width, (3, 3), padding=1)(y)
    y = _norm(train, self.data_axis, zero=True)(y)  # Each block starts as the identity: trains deep stacks from step 0.
    shortcut = x_BxHxWxC
    if self.stride != 1 or x_BxHxWxC.shape[-1] != self.width:
      shortcut = _norm(train, self.data_axis, name="shortcut_norm")(conv(self.width, (1, 1), strides=self.stride,
                                                         name="shortcut_conv")(x_BxHxWxC))
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """images [B, H, W, C] -> features [B, widths[-1]] (global average pool); the classification head reads them."""
  stage_sizes: tuple = (3, 3, 3)
  stage_widths: tuple = (16, 32, 64)
  data_axis: str | None = None  # The pmap axis BatchNorm averages its moments over; None when jit sees the whole batch.
  pretraining_only = ()

  @nn.compact
  def features(self, image_BxHxWxC, train: bool = False):
    x = image_BxHxWxC.astype(jnp.float32)
    x = nn.Conv(self.stage_widths[0], (3, 3), padding=1, use_bias=False, kernel_init=nn.initializers.he_normal(),
                name="stem")(x)
    x = nn.relu(_norm(train, self.data_axis, name="stem_norm")(x))
    for i, (blocks, width) in enumerate(zip(self.stage_sizes, self.stage_widths)):
      for j in range(blocks):
        x = BasicBlock(width, stride=2 if i > 0 and j == 0 else 1, data_axis=self.data_axis,
                       name=f"stage{i}_block{j}")(x, train)
    return jnp.mean(x, axis=(1, 2))

  def __call__(self, image_BxHxWxC, train: bool = False):
    return self.features(image_BxHxWxC, train)
