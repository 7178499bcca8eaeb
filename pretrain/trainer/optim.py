"""AdamW (or Muon for hidden matrices beside AdamW for the rest) with linear warmup (from above zero), then cosine decay or a
constant phase and a linear cooldown to a floor; global-norm clipping, decay on matrices only; optional frozen
parameters and per-group learning-rate multipliers, both chosen by regexes over parameter names."""
import jax
import optax

from pretrain.errors import ConfigError
from pretrain.models import classifier, lora
from pretrain.rules import Rules, non_negative_float
from pretrain.tree import path_name as param_name


SCHEDULES = ("cosine", "wsd")
OPTIMIZERS = ("adamw", "muon")


def learning_rate(config, peak=None):
  """The schedule of optim.lr (or of `peak`, with the same shape scaled, for Muon's matrices)."""
  o = config.optim
  peak = o.lr if peak is None else peak
  scale = peak / o.lr if o.lr else 0.0
  decay_steps = max(o.decay_steps or config.train.steps, o.warmup_steps + 1)
  schedule = o.schedule
  first = peak / (o.warmup_steps + 1)  # Warmup's update i uses peak * (i + 1) / (warmup + 1): the first is not zero.
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(init_value=first, peak_value=peak, warmup_steps=o.warmup_steps,
                                              decay_steps=decay_steps, end_value=o.min_lr * scale)
  if schedule != "wsd":
    raise ConfigError(f"optim.schedule={schedule!r} must be one of {SCHEDULES}")
  if not 0 < o.cooldown_fraction <= 1:
    raise ConfigError(f"optim.cooldown_fraction={o.cooldown_fraction} must be in (0, 1]")
  # Warmup, stable at the peak, then a linear cooldown over the last cooldown_fraction of the decay steps.
  cooldown = max(1, round(o.cooldown_fraction * decay_steps))
  stable = max(0, decay_steps - o.warmup_steps - cooldown)
  return optax.join_schedules(
      [optax.linear_schedule(first, peak, o.warmup_steps), optax.constant_schedule(peak),
       optax.linear_schedule(peak, o.min_lr * scale, cooldown)], [o.warmup_steps, o.warmup_steps + stable])


def decay_mask(no_decay=()):
  """Weight decay on matrices and embeddings (ndim >= 2), except parameters named by `no_decay` regexes;
  never on biases, norm scales or gains."""
  spared = Rules("optim.no_decay", no_decay)

  def mask(params):
    return jax.tree_util.tree_map_with_path(lambda path, p: p.ndim >= 2 and not spared.matches(param_name(path)), params)
  return mask


def param_names(params) -> list[str]:
  return [param_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def lr_multipliers(config) -> Rules:
  """optim.lr_multipliers: "REGEX=MULT" entries, MULT >= 0."""
  return Rules("optim.lr_multipliers", config.optim.lr_multipliers, non_negative_float, form="REGEX=MULT with MULT >= 0",
               example="^backbone/=0.1")


def _scale_by_name(rules) -> optax.GradientTransformation:
  """Multiplies each update by the multiplier of the first rule matching its name (1 when none does)."""
  def multiplier(path):
    return rules.value(param_name(path), 1.0)

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(lambda path, u: u * multiplier(path), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _muon_or_adamw(config) -> optax.GradientTransformation:
  """Muon for the matrices of Dense layers (2-D `kernel`s, but not those optim.muon_exclude names), AdamW for
  embeddings, the head, norms and biases: orthogonalised momentum suits matrices acting on hidden states only."""
  o = config.optim
  adamw = optax.adamw(learning_rate(config), b1=o.beta1, b2=o.beta2, eps=o.eps,
                      weight_decay=o.weight_decay, mask=decay_mask(o.no_decay))
  name = o.name
  if name == "adamw":
    return adamw
  if name != "muon":
    raise ConfigError(f"optim.name={name!r} must be one of {OPTIMIZERS}")
  excluded = Rules("optim.muon_exclude", o.muon_exclude)
  muon = optax.contrib.muon(learning_rate(config, peak=o.muon_lr), beta=o.muon_momentum,
                            weight_decay=o.weight_decay)

  def labels(params):
    def label(path, p):
      param = param_name(path)
      hidden_matrix = p.ndim == 2 and param.endswith("kernel") and not excluded.matches(param)
      return "muon" if hidden_matrix else "adamw"
    return jax.tree_util.tree_map_with_path(label, params)

  return optax.multi_transform({"muon": muon, "adamw": adamw}, labels)


def frozen(config) -> Rules:
  """The parameters that never change: optim.freeze's, and under LoRA everything but the adapters (and a
  classifier's head)."""
  entries = tuple(config.optim.freeze)
  if config.model.lora.rank > 0:
    entries += (lora.frozen_pattern(classifier.backbone_prefix(config)),)
  return Rules("optim.freeze", entries)


def trainable_count(config, params) -> int:
  """How many parameter values the optimizer changes."""
  rules = frozen(config)
  return int(sum(leaf.size for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
                 if not rules.matches(param_name(path))))


def make(config) -> optax.GradientTransformation:
  o = config.optim
  inner = _muon_or_adamw(config)
  tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), inner) if o.grad_clip > 0 else inner
  rules = lr_multipliers(config)
  if rules:
    tx = optax.chain(tx, _scale_by_name(rules))
  freeze = frozen(config)
  if not freeze and not rules:
    return tx

  def labels(params):
    names = param_names(params)
    freeze.require_each_matches(names)
    rules.require_each_matches(names)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if freeze.matches(param_name(path)) else "trained", params)

  # Frozen parameters get exact zero updates (no decay, no optimizer state) and stay out of clipping's norm.
  return optax.multi_transform({"frozen": optax.set_to_zero(), "trained": tx}, labels)
