"""Loading ml_collections config files, applying `--config.a.b=value` overrides, and validation.

Every config file builds on `configs/base.py`, whose ConfigDict is locked, so a misspelt key in a file
or on the command line is an error instead of a silently ignored setting.
"""
import ast
import importlib.util
import json
import os
import re
import sys

import ml_collections

from pretrain.errors import ConfigError

# The defaults every config starts from, and onto which a saved config.json is upgraded.
BASE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "base.py")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def load(spec: str, overrides: list[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
  """Loads `path/to/file.py[:variant]` and applies (dotted key, string value) overrides."""
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist; pass --config configs/NAME.py[:VARIANT]")
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:  # Config files import their siblings as `configs.base`.
    sys.path.insert(0, root)
  module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    config = module.get_config(variant or None)
  except KeyError as e:  # an unknown variant, or a key missing from base.py
    raise ConfigError(f"{path}: {e.args[0] if e.args else e}") from None
  for key, value in overrides:
    set_value(config, key, value)
  return config


def set_value(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets a dotted key from its command-line text, parsed to the type the key already has."""
  *parents, leaf = key.split(".")
  node = config
  for i, name in enumerate(parents):
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      raise ConfigError(_unknown(config, ".".join(parents[:i + 1])))
    node = node[name]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ConfigError(_unknown(config, key))
  field = node.get_ref(leaf) if hasattr(node, "get_ref") else None
  kind = field.get_type() if field is not None else type(node[leaf])
  value = _parse(key, text, kind, node[leaf])
  with node.ignore_type():
    node[leaf] = value


def _unknown(config, key):
  parent = key.rpartition(".")[0]
  node = config
  for name in filter(None, parent.split(".")):
    node = node.get(name) if isinstance(node, ml_collections.ConfigDict) else None
  known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
  hint = f"; keys under {parent or 'the config'}: {known}" if known else ""
  return f"unknown config key --config.{key}{hint}"


def _parse(key, text, kind, current):
  where = f"--config.{key}={text!r}"
  if kind is bool:
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise ConfigError(f"{where}: expected true or false")
  if kind is int:
    try:
      return int(text)
    except ValueError:
      raise ConfigError(f"{where}: expected an integer") from None
  if kind is float:
    try:
      return float(text)
    except ValueError:
      raise ConfigError(f"{where}: expected a number") from None
  if kind is str:
    return text
  if kind in (tuple, list):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = tuple(s.strip() for s in text.split(",") if s.strip())
    if not isinstance(value, (tuple, list)):
      value = (value,)
    return kind(value)
  if isinstance(current, ml_collections.ConfigDict):
    raise ConfigError(f"{where}: {key} is a group of settings; set one of its keys instead")
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def from_json(text: str) -> ml_collections.ConfigDict:
  """A saved config, upgraded onto today's configs/base.py (see `upgrade`)."""
  return upgrade(json.loads(text))


def upgrade(saved: dict) -> ml_collections.ConfigDict:
  """The values of a config saved by any earlier version, on today's defaults: a field added since it was saved
  takes its default from configs/base.py (the one place defaults are written), so code reads every field
  directly. Fields base.py no longer has are kept as saved; lists (JSON's tuples) become tuples again."""
  config = load(BASE_CONFIG)
  config.unlock()
  _overlay(config, saved)
  config.lock()
  return config


def _overlay(node: ml_collections.ConfigDict, saved: dict) -> None:
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(node.get(key), ml_collections.ConfigDict):
      _overlay(node[key], value)
      continue
    with node.ignore_type():
      node[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else (
          tuple(value) if isinstance(value, list) else value)


def flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def validate(config, *, num_devices: int) -> None:
  """Checks that need no data and no compilation; each failure names the key and the fix."""
  m, t, o = config.model, config.train, config.optim
  positive = {"model.num_layers": m.num_layers, "model.num_heads": m.num_heads, "model.width": m.width,
              "model.context": m.context, "train.steps": t.steps, "train.batch_size": t.batch_size,
              "train.steps_per_call": t.steps_per_call, "optim.accum_steps": o.accum_steps,
              "train.log_every": t.log_every, "train.eval_every": t.eval_every,
              "train.checkpoint_every": t.checkpoint_every, "train.keep_checkpoints": t.keep_checkpoints}
  for key, value in positive.items():
    if value <= 0:
      raise ConfigError(f"--config.{key}={value} must be positive")
  if t.prefetch < 0:
    raise ConfigError(f"--config.train.prefetch={t.prefetch} must be >= 0 (0 builds batches in the loop)")
  if m.width % m.num_heads:
    raise ConfigError(f"model.num_heads={m.num_heads} does not divide model.width={m.width}; "
                      f"pick heads among {[h for h in range(1, m.width + 1) if m.width % h == 0][:12]}")
  if not 0 <= m.dropout < 1:
    raise ConfigError(f"model.dropout={m.dropout} must be in [0, 1)")
  if not 0 <= config.data.val_fraction < 1:
    raise ConfigError(f"data.val_fraction={config.data.val_fraction} must be in [0, 1)")
  if o.lr <= 0 or o.min_lr < 0:
    raise ConfigError(f"optim.lr={o.lr} must be > 0 and optim.min_lr={o.min_lr} >= 0")
  if t.batch_size % num_devices:
    raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by the {num_devices} devices; "
                      f"use a multiple of {num_devices}")
  if (t.batch_size // num_devices) % o.accum_steps:
    raise ConfigError(f"optim.accum_steps={o.accum_steps} does not divide the per-device batch "
                      f"{t.batch_size // num_devices}; pick a divisor of it")
  if config.eval.batch_size < 0 or config.eval.micro_batch_size < 0:
    raise ConfigError(f"eval.batch_size={config.eval.batch_size} and eval.micro_batch_size="
                      f"{config.eval.micro_batch_size} must be >= 0 (0: the train batch / micro-batch)")
  if config.data.document_mask and (config.model.family != "gpt" or config.objective != "next_token"):
    raise ConfigError(f"data.document_mask=true is for next-token GPTs (model.family=gpt, objective=next_token), "
                      f"not model.family={config.model.family!r}, objective={config.objective!r}; unset it")
  if config.model.scan_layers and config.model.family not in ("gpt", "bert"):
    raise ConfigError(f"model.scan_layers=true is implemented for the gpt family (its Llama shape too) and bert, not "
                      f"{config.model.family!r}; set --config.model.scan_layers=false")
  if t.dropout_rng not in ("threefry2x32", "rbg", "unsafe_rbg"):
    raise ConfigError(f"train.dropout_rng={t.dropout_rng!r} is not a generator; use threefry2x32, rbg or unsafe_rbg")
  k = t.steps_per_call
  for key in ("log_every", "eval_every", "checkpoint_every", "steps"):
    if t[key] % k:
      raise ConfigError(f"train.{key}={t[key]} is not a multiple of train.steps_per_call={k}; "
                        f"use a multiple of {k} or set --config.train.steps_per_call=1")
  profile = tuple(t.profile_steps)
  if profile and not (len(profile) == 2 and all(isinstance(x, int) for x in profile) and 0 <= profile[0] < profile[1]):
    raise ConfigError(f"train.profile_steps={profile} must be (START, END) with 0 <= START < END, e.g. (5,10), or ()")
  eval_extra(config)


RESERVED_SPLITS = ("train", "val", "events")  # metrics.jsonl splits the loop writes itself.


def eval_extra(config) -> list[tuple[str, list[tuple[str, str]]]]:
  """eval.extra entries "NAME:KEY=VALUE,KEY=VALUE" as (NAME, [(data key, value text)]), checked."""
  taken = [name for name, _, _ in mixture(config)]
  return data_entries(config, "eval.extra", config.eval.extra, taken)


def mixture(config) -> list[tuple[str, list[tuple[str, str]], float]]:
  """data.mixture entries "NAME:KEY=VALUE,...,weight=W" as (NAME, [(data key, value text)], W), checked."""
  out = []
  for name, pairs in data_entries(config, "data.mixture", config.data.mixture, (), extra_keys=("weight",)):
    weights = [v for k, v in pairs if k == "weight"]
    try:
      weight = float(weights[0]) if len(weights) == 1 else None
    except ValueError:
      weight = None
    if weight is None or not weight > 0:
      raise ConfigError(f"data.mixture {name!r} needs one weight=W with W > 0 (e.g. '{name}:path=...,weight=0.5')")
    out.append((name, [(k, v) for k, v in pairs if k != "weight"], weight))
  return out


def data_entries(config, key: str, entries, taken=(), extra_keys=()) -> list[tuple[str, list[tuple[str, str]]]]:
  """Entries "NAME:KEY=VALUE,KEY=VALUE" over data.* (eval.extra, data.mixture) as (NAME, [(key, value)])."""
  out = []
  for entry in entries:
    name, colon, spec = str(entry).partition(":")
    pairs = [p.strip().partition("=") for p in re.split(r",(?=\s*[A-Za-z_][\w.]*=)", spec) if p.strip()]
    if not colon or not re.fullmatch(r"[A-Za-z][\w-]*", name) or not pairs or any(not eq or not k for k, eq, _ in pairs):
      raise ConfigError(f"{key} entry {entry!r} is not NAME:KEY=VALUE[,KEY=VALUE]; write e.g. "
                        "'novels:path=/data/novels.txt' (KEY: a data.* field)")
    if name in RESERVED_SPLITS or name in [n for n, _ in out] or name in taken:
      raise ConfigError(f"{key} name {name!r} is taken (by {', '.join(RESERVED_SPLITS)}, a data.mixture source or "
                        "another entry); pick another")
    for k, _, _ in pairs:
      if k.strip() not in extra_keys and k.split(".")[0].strip() not in config.data:
        raise ConfigError(f"{key} {name!r}: data.{k} is not a data field; use one of "
                          f"{', '.join(sorted([*config.data.keys(), *extra_keys]))}")
    out.append((name, [(k.strip(), v.strip()) for k, _, v in pairs]))
  return out


def eval_batching(config, num_devices: int) -> tuple[int, int]:
  """(rows per eval call, micro-batches per call). A micro-batch is eval.micro_batch_size rows (default:
  the train micro-batch, train.batch_size / optim.accum_steps), at most eval.batch_size (default
  train.batch_size), rounded up to a multiple of the device count; the eval batch is rounded up to whole
  micro-batches. Rows past the end of the split carry mask 0, so the size changes the cost, not the result."""
  wanted = config.eval.batch_size or config.train.batch_size
  micro = min(config.eval.micro_batch_size or config.train.batch_size // config.optim.accum_steps, wanted)
  micro = -(-micro // num_devices) * num_devices
  accum = -(-wanted // micro)
  return accum * micro, accum
