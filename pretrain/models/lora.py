"""Low-rank adapters (LoRA, Hu et al. 2021) for any family: model.lora.rank > 0 puts beside every 2-D kernel
that model.lora.targets names (regexes over '/'-joined parameter names) two parameters, lora_a [in, r]
(normal, std 1/sqrt(in)) and lora_b [r, out] (zeros, so a fresh adapter changes nothing), and the model
computes with W + (alpha / r) A B. Only the adapters train (and a classifier's new head): the optimizer
freezes everything else (optim.frozen) and keeps no state for it, and the frozen weights pass through
stop_gradient, so no gradient is computed for them.

The adapters are merged into the kernels as the model is applied: one [in, r] x [r, out] product per target
and step, r / (tokens per step) of the layer's own cost, and export (pretrain.hf) writes the same merged
kernels. The wrapper is a plain object around the flax module with its init and apply; every other attribute
(features, backbone, mask_id, ...) is the module's.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np

from pretrain.errors import ConfigError
from pretrain.models import classifier
from pretrain.rules import Rules
from pretrain.tree import path_name

ADAPTERS = ("lora_a", "lora_b")


def is_adapter(name: str) -> bool:
  return name.rsplit("/", 1)[-1] in ADAPTERS


def scale(lora) -> float:
  return float(lora.alpha) / lora.rank


def frozen_pattern(backbone_prefix: str) -> str:
  """The regex of what LoRA freezes: every parameter under the prefix except the adapters."""
  return f"^{re.escape(backbone_prefix)}(?!.*/lora_[ab]$)"


def wrap(model, config):
  """`model` with adapters when config.model.lora.rank > 0, else `model` itself."""
  lora = config.model.lora
  if lora.rank <= 0:
    if lora.rank < 0:
      raise ConfigError(f"model.lora.rank={lora.rank} must be >= 0 (0: no adapters)")
    return model
  if lora.alpha <= 0:
    raise ConfigError(f"model.lora.alpha={lora.alpha} must be > 0")
  if config.model.get("scan_layers"):
    raise ConfigError("model.lora with model.scan_layers=true is not implemented (adapters sit beside 2-D kernels, "
                      "and scanned ones are stacked); set --config.model.scan_layers=false")
  return LoRA(model, int(lora.rank), scale(lora), Rules("model.lora.targets", lora.targets),
              classifier.backbone_prefix(config))


def _key(rngs):
  return rngs["params"] if isinstance(rngs, dict) else rngs


class LoRA:
  """The module `inner` with adapters on the kernels `targets` names."""

  def __init__(self, inner, rank: int, scale: float, targets: Rules, backbone_prefix: str = ""):
    self.inner, self.rank, self.scale, self.targets = inner, rank, scale, targets
    # A classifier's new head trains in full; the family's network under it is what the adapters adapt.
    self.backbone_prefix = backbone_prefix

  def __getattr__(self, name):
    return getattr(self.__dict__["inner"], name)

  def init(self, rngs, *args, **kwargs):
    variables = dict(self.inner.init(rngs, *args, **kwargs))
    kernels = [(path_name(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
               if path_name(p).endswith("kernel") and leaf.ndim == 2]
    names = [n for n, _ in kernels]
    self.targets.require_each_matches(names)
    key, adapters = _key(rngs), {}
    for i, (name, kernel) in enumerate(kernels):
      if self.targets.matches(name) and name.startswith(self.backbone_prefix):
        fan_in, fan_out = kernel.shape
        a = jax.random.normal(jax.random.fold_in(key, i), (fan_in, self.rank), jnp.float32) / np.sqrt(fan_in)
        adapters[name] = (a, jnp.zeros((self.rank, fan_out), jnp.float32))
    variables["params"] = _with_adapters(variables["params"], adapters)
    return variables

  def apply(self, variables, *args, **kwargs):
    variables = dict(variables)
    variables["params"] = merged(variables["params"], self.scale, self.backbone_prefix, stop_gradient=True)
    return self.inner.apply(variables, *args, **kwargs)


def _with_adapters(params, adapters: dict):
  def visit(node, prefix):
    out = {k: visit(v, f"{prefix}{k}/") if isinstance(v, dict) else v for k, v in node.items()}
    if f"{prefix}kernel" in adapters:
      out["lora_a"], out["lora_b"] = adapters[f"{prefix}kernel"]
    return out
  return visit(params, "")


def merged(params, scale: float, frozen_prefix: str = "", stop_gradient: bool = False, xp=jnp):
  """The parameters without adapters, each adapted kernel replaced by W + scale A B; with stop_gradient, what
  LoRA freezes (everything under `frozen_prefix` but the adapters) gets no gradient."""
  def visit(node, prefix):
    out = {}
    for k, v in node.items():
      if isinstance(v, dict):
        out[k] = visit(v, f"{prefix}{k}/")
      elif k not in ADAPTERS:
        frozen = stop_gradient and f"{prefix}{k}".startswith(frozen_prefix)
        out[k] = jax.lax.stop_gradient(v) if frozen else v
    if "lora_a" in node:
      out["kernel"] = out["kernel"] + scale * xp.matmul(node["lora_a"], node["lora_b"]).astype(out["kernel"].dtype)
    return out
  return visit(params, "")


def merge(params, lora) -> dict:
  """A checkpoint's parameters (numpy) with the adapters merged into their kernels (for export); unchanged
  when the run has none."""
  if lora.rank <= 0:
    return params
  return merged(params, scale(lora), xp=np)
