"""Pixel likelihood: log p(x) = sum_i log p(x_i | x_<i) over the sub-pixels of each image in raster order."""
import jax.numpy as jnp
import optax

from pretrain.objectives import apply


def model_inputs(batch):
  return batch["image"]


def loss(model, variables, batch, *, train, rng):
  """log p(x) = sum_i log p(x_i | x_<i) over the sub-pixels of each image in raster order, a categorical
  over the pixel levels (256, or 2 on binarized images: a Bernoulli). Counts are sub-pixels (so the mean
  loss / ln 2 is bits/dim); `images` counts images, for nats/image."""
  image_BxHxWxC = batch["image"]
  logits_BxHxWxCxL, model_state = apply(model, variables, image_BxHxWxC, train=train, rng=rng)
  nll_BxHxWxC = optax.softmax_cross_entropy_with_integer_labels(logits_BxHxWxCxL, image_BxHxWxC.astype(jnp.int32))
  w_B = batch["mask"]
  dims = image_BxHxWxC[0].size
  return {"loss_sum": jnp.sum(jnp.sum(nll_BxHxWxC, axis=(1, 2, 3)) * w_B), "count": jnp.sum(w_B) * dims,
          "images": jnp.sum(w_B)}, model_state
