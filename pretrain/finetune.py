"""Starting a run from a pretrained one (config group `init`): the backbone's architecture from the
pretrained run's config.json, its parameters (only: no optimizer state, no step) from one of its
checkpoints, mapped by name onto this model. Every mismatch is reported at once, in one CheckpointError.

Modes (init.mode):
  full          load the pretrained parameters, train everything;
  linear_probe  load them, train only the new head (optim.freeze gains "^backbone/");
  scratch       the same architecture from random init: the baseline that shows what pretraining buys.

`train` is the fine-tuning layer above the training loop: it resolves the pretrained run (`resolve_config`:
architecture and vocabulary size from its config.json and dataset.json) before anything is built, then runs
pretrain.trainer.train with `load_pretrained` as the initializer, which the loop calls only when the run's own workdir
has no checkpoint, so a fine-tuning run that resumes restores its own full state instead.

Names: a classifier keeps the family's network under `backbone/`, so a pretrained `h_0/attn/c_attn/kernel`
becomes `backbone/h_0/attn/c_attn/kernel`; the head (`head/...`) is new and keeps its fresh init.
"""
import copy

import jax
import numpy as np

from pretrain.models import classifier, lora
from pretrain.trainer import checkpoint, layout, optim, run_dir
from pretrain.trainer import train as trainer
from pretrain.errors import CheckpointError, ConfigError
from pretrain.rules import Rules

MODES = ("full", "linear_probe", "scratch")
ARCHITECTURES = ("checkpoint", "config")
BACKBONE = classifier.BACKBONE
# model.* settings that belong to the run being trained, not to the pretrained architecture.
_RUN_SETTINGS = ("head", "dropout", "dtype", "attention", "lora")


def train(config, workdir: str) -> dict:
  """Trains (or resumes) `workdir` as the config says, starting from the pretrained run init.workdir names (if
  any); returns the final eval metrics."""
  if mode(config) == "scratch" and not config.init.workdir:
    return trainer.train(config, workdir)
  config = resolve_config(config)

  def initialize(run, state):
    return load_pretrained(run.config, run.model, run.tx, state, log=run.writer.console,
                           vocabulary=run.dataset.vocabulary)
  return trainer.train(config, workdir, initialize=initialize)


def mode(config) -> str:
  init = config.init
  return init.mode or ("full" if init.workdir else "scratch")


def resolve_config(config):
  """The config a run really uses (a copy): init settings checked, the backbone's model.* taken from the
  pretrained run, the effective mode written down, and for linear_probe the backbone frozen."""
  init = config.init
  chosen = mode(config)
  if chosen not in MODES:
    raise ConfigError(f"init.mode={chosen!r} is not one of {MODES}")
  if init.architecture not in ARCHITECTURES:
    raise ConfigError(f"init.architecture={init.architecture!r} is not one of {ARCHITECTURES}")
  if chosen != "scratch" and not init.workdir:
    raise ConfigError(f"init.mode={chosen} starts from a pretrained run: set --config.init.workdir=DIR "
                      "(or --config.init.mode=scratch for random init)")
  if chosen == "linear_probe" and config.objective != "classification":
    raise ConfigError("init.mode=linear_probe trains only a classification head; set --config.objective=classification")
  if init.step < 0:
    raise ConfigError(f"init.step={init.step} must be >= 0 (0 is the newest checkpoint)")
  Rules("init.dont_load", init.dont_load)
  config = copy.deepcopy(config)
  if init.workdir and init.architecture == "checkpoint":
    saved = run_dir.saved_config(init.workdir)
    with config.ignore_type():
      for key, value in saved.model.items():
        if key not in _RUN_SETTINGS and key in config.model:
          config.model[key] = tuple(value) if isinstance(value, list) else value
    # A vocabulary the backbone took from its data keeps its size: fine-tuning data may lack its end-of-text id.
    pretrained_vocab_size = run_dir.saved_dataset(init.workdir).get("vocab_size")
    if not config.model.vocab_size and pretrained_vocab_size:
      config.model.vocab_size = int(pretrained_vocab_size)
  config.init.mode = chosen
  if chosen == "linear_probe" and f"^{BACKBONE}" not in config.optim.freeze:
    config.optim.freeze = (*config.optim.freeze, f"^{BACKBONE}")
  return config


def _flat(tree) -> dict:
  """{(collection, '/'-joined name): leaf} over a {collection: nested dict} tree."""
  out = {}
  for collection, sub in tree.items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(sub)[0]:
      out[(collection, optim.param_name(path))] = leaf
  return out


def _show(key) -> str:
  collection, name = key
  return name if collection == "params" else f"{collection}:{name}"


def _set(tree: dict, collection: str, name: str, value) -> None:
  node = tree.setdefault(collection, {})
  *parents, leaf = name.split("/")
  for p in parents:
    node = node.setdefault(p, {})
  node[leaf] = value


def plan(config, saved_config, checkpoint_tree: dict, model_tree: dict, pretraining_only=()):
  """Which checkpoint entry fills which model entry, and the list of mismatches.

  Both trees are {collection: nested dict} (params, batch_stats, ...). Returns ({model key: checkpoint key},
  [problem, ...]). Skipped without complaint: what init.dont_load names (by model name), the output layer
  the family uses only for pretraining (its `pretraining_only`), and a fine-tuned checkpoint's own task head
  (a new task gets a new head). A model entry under the backbone that the checkpoint does not fill is a
  problem unless init.dont_load names it; entries outside the backbone (the head) and LoRA adapters start fresh.
  """
  src, dst = classifier.backbone_prefix(saved_config), classifier.backbone_prefix(config)
  dont_load = Rules("init.dont_load", config.init.dont_load)
  family_only = Rules("pretraining_only", pretraining_only if dst else ())
  model_flat = _flat(model_tree)
  mapping, problems = {}, []
  for (collection, name), meta in _flat(checkpoint_tree).items():
    if not name.startswith(src) or family_only.matches(name[len(src):]):
      continue
    target = (collection, dst + name[len(src):])
    if dont_load.matches(target[1]):
      continue
    if target not in model_flat:
      problems.append(f"unexpected {_show(target)} {tuple(meta.shape)} (the model has no such entry)")
    elif tuple(meta.shape) != tuple(model_flat[target].shape):
      problems.append(f"shape of {_show(target)}: checkpoint {tuple(meta.shape)}, model {tuple(model_flat[target].shape)}")
      mapping[target] = None
    else:
      mapping[target] = (collection, name)
  for key, leaf in model_flat.items():
    if key[1].startswith(dst) and key not in mapping and not dont_load.matches(key[1]) and not lora.is_adapter(key[1]):
      problems.append(f"missing {_show(key)} {tuple(leaf.shape)} (not in the checkpoint)")
  return {k: v for k, v in mapping.items() if v is not None}, problems


def check_vocabulary(workdir: str, vocabulary) -> None:
  """This run's token ids must mean what they meant in pretraining: the same bytes, characters or tokenizer
  file, and an end-of-text id (if this data has one) that the pretrained model had too."""
  pretrained = run_dir.saved_dataset(workdir).get("vocabulary")
  if pretrained is None or vocabulary is None:
    return
  symbols = lambda v: {k: x for k, x in v.items() if k not in ("end_of_text", "vocab_size")}
  show = lambda v: ", ".join(f"{k}={str(x)[:40]!r}" for k, x in symbols(v).items())
  if symbols(pretrained) != symbols(vocabulary):
    raise CheckpointError(f"{workdir} was pretrained on token ids meaning ({show(pretrained)}), but this run's data "
                          f"gives ({show(vocabulary)}), so every token would mean another symbol; read both with "
                          "the same --config.data.tokenizer (byte, or file with the same tokenizer_path)")
  end = vocabulary.get("end_of_text")
  if end is not None and pretrained.get("end_of_text") != end:
    had = pretrained.get("end_of_text")
    raise CheckpointError(f"this run's data ends each document with the end-of-text id {end}, which {workdir}'s model "
                          f"{'never saw' if had is None else f'has as {had}'}; fine-tune on one text file (no "
                          "end-of-text), or pretrain on documents too")


def load_pretrained(config, model, tx, state, log=print, vocabulary=None):
  """`state` (fresh) with the pretrained run's parameters (and non-parameter collections such as BatchNorm
  statistics) in place of the fresh ones; the optimizer state is re-initialised for them and the step stays 0.
  A scratch run returns `state` unchanged. `vocabulary` (data.vocabulary of this run's dataset) must equal
  the one the pretrained run recorded, if it recorded one."""
  init = config.init
  if mode(config) == "scratch":
    log(f"init: random ({'architecture of ' + init.workdir if init.workdir else 'scratch'})")
    return state
  check_vocabulary(init.workdir, vocabulary)
  saved = run_dir.saved_config(init.workdir)
  directory = layout.checkpoints(init.workdir)
  step, saved_tree = checkpoint.saved_tree(directory, init.step or None)
  checkpoint_tree = {"params": saved_tree["params"], **(saved_tree.get("model_state") or {})}
  model_tree = {"params": state.params, **state.model_state}
  backbone = getattr(model, "backbone", model)
  mapping, problems = plan(config, saved, checkpoint_tree, model_tree, getattr(backbone, "pretraining_only", ()))
  if problems:
    family, saved_family = config.model.family, saved.model.family
    which = (f"it is a {saved_family!r} model and this is a {family!r} model, so no names line up; "
             if saved_family != family else "")
    raise CheckpointError(
        f"{directory}/{step} does not fit this model: {which}{len(problems)} mismatch(es): {'; '.join(problems)}. "
        "Fine-tune the pretrained architecture (init.architecture=checkpoint), or keep the listed entries at "
        "their fresh init with --config.init.dont_load=REGEX,...")
  checkpoint_flat = _flat(checkpoint_tree)
  target = {}  # In the checkpoint's own layout: {"params": ..., "model_state": {collection: ...}}.
  for collection, name in mapping.values():
    meta = checkpoint_flat[(collection, name)]
    node = target if collection == "params" else target.setdefault("model_state", {})
    _set(node, collection, name, np.zeros(meta.shape, meta.dtype))
  restored = checkpoint.restore_subtree(directory, step, target) if target else {}
  restored_flat = _flat({"params": restored.get("params", {}), **restored.get("model_state", {})})

  def fill(collection, tree):
    def leaf(path, fresh):
      key = (collection, optim.param_name(path))
      return np.asarray(restored_flat[mapping[key]], fresh.dtype) if key in mapping else fresh
    return jax.tree_util.tree_map_with_path(leaf, tree)

  params = fill("params", state.params)
  model_state = {c: fill(c, t) for c, t in state.model_state.items()}
  fresh = sorted(_show(k) for k in _flat(model_tree) if k not in mapping)
  log(f"init: {len(mapping)} arrays from {directory}/{step}; fresh init: {', '.join(fresh) or 'none'}")
  return state.replace(params=params, model_state=model_state, opt_state=tx.init(params))
