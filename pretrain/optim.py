"""AdamW with linear warmup, cosine decay to a floor, global-norm clipping, decay on matrices only."""
import jax
import optax


def learning_rate(config):
  o = config.optim
  decay_steps = o.decay_steps or config.train.steps
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=o.lr, warmup_steps=o.warmup_steps,
      decay_steps=max(decay_steps, o.warmup_steps + 1), end_value=o.min_lr)


def decay_mask(params):
  """Weight decay on matrices and embeddings (ndim >= 2); not on biases, norm scales or gains."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make(config) -> optax.GradientTransformation:
  o = config.optim
  adamw = optax.adamw(learning_rate(config), b1=o.beta1, b2=o.beta2, eps=o.eps,
                      weight_decay=o.weight_decay, mask=decay_mask)
  return optax.chain(optax.clip_by_global_norm(o.grad_clip), adamw) if o.grad_clip > 0 else adamw
