"""The training loop: data -> model -> jitted steps -> metrics and checkpoints, resumable at any step.

Init / resume order (one way, always):
  1. the strategy; validate the config (and the data source's own checks); dataset, model, optimizer and
     the state's abstract shape through pretrain/trainer/run_dir.py, with the strategy's shardings;
  2. write DIR/config.json and DIR/dataset.json (what the run's token ids mean, for fine-tuning from it);
  3. if DIR/checkpoints has a step, restore it straight into that abstract state: params, optimizer
     state and step, and from its metadata the train-metrics window and the actions a stop left owed;
     otherwise init a fresh state from the seed, computed in its shards, and pass it through `initialize`
     (pretrain/finetune.py puts a pretrained run's parameters in place of the fresh ones there);
  4. drop metric lines past the restored step (and the owed actions' lines at it), do the owed actions,
     and continue; batches and dropout keys depend only on (seed, step), so the continuation writes the
     uninterrupted run's rows.

The loop itself only runs jitted calls and hands each step boundary to the actions due there
(pretrain/trainer/actions.py: log, evaluate, checkpoint; the profiler around calls).
"""
import functools
import os

import jax
import numpy as np

from pretrain import configlib, data, models
from pretrain.trainer import actions, checkpoint, guards, layer_stats, ledger, metrics, optim, parallel, run_dir, step
from pretrain.errors import ConfigError, DataError, Preempted


class Run:
  """Everything a loop needs, built once; `evaluate` and `train` can be used from a notebook."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    self.strategy = parallel.make(config)  # First to touch the devices: it may set their number.
    self.process_index, self.process_count = jax.process_index(), jax.process_count()
    configlib.validate(config, num_devices=self.strategy.num_devices)
    data.check(config)
    # Nothing is allocated until the state is built in its shards.
    self.parts = parts = run_dir.build(config, data_axis=self.strategy.data_axis, batch_size=config.train.batch_size)
    self.dataset, self.model, self.tx, self.seq_len = parts.dataset, parts.model, parts.tx, parts.seq_len
    self.init_state, self.shapes = parts.init_state, parts.shapes
    self.eval_batch_size, self.eval_accum_steps = configlib.eval_batching(config, self.strategy.num_devices)
    self.writer = metrics.MetricWriter(workdir, enabled=self.process_index == 0)
    self.param_names = optim.param_names(self.shapes.params)
    self.tokens_per_step = config.train.batch_size * self.seq_len
    self.layer_stats = (layer_stats.LayerStats(self.shapes.params, config.log.layer_groups)
                        if config.log.layer_stats else None)
    self.eval_sets = [("val", self.dataset), *self.dataset.sources, *extra_eval_sets(config, self.dataset)]
    self.parameters = parameter_counts(self)

  def train_fn(self):
    """The compiled train call the loop runs: train.steps_per_call updates, state donated."""
    c = self.config
    is_log_step = lambda done: (done % c.train.log_every == 0) | (done == c.train.steps)
    return self.strategy.train(functools.partial(step.make_train_step, self.model, self.parts.objective.loss, self.tx,
                                                 seed=c.seed, accum_steps=c.optim.accum_steps, dropout_rng=c.train.dropout_rng,
                                                 layer_stats=self.layer_stats, is_log_step=is_log_step),
                               c.train.steps_per_call)

  def eval_fn(self):
    """The compiled eval step: sums over one eval batch, eval.micro_batch_size rows at a time."""
    return self.strategy.evaluate(functools.partial(step.make_eval_step, self.model, self.parts.objective.loss,
                                                    accum_steps=self.eval_accum_steps))

  def batches(self, first_step: int, k: int):
    t = self.config.train
    rows = [data.train_batch(self.dataset.train, first_step + i, seed=self.config.seed, batch_size=t.batch_size,
                             seq_len=self.seq_len, process_index=self.process_index,
                             process_count=self.process_count) for i in range(k)]
    return {key: np.stack([r[key] for r in rows]) for key in rows[0]}

  def train_batches(self, first_step: int):
    """Host batches of every jitted call from `first_step` on, built ahead of the device (train.prefetch)."""
    k = self.config.train.steps_per_call
    return data.prefetched(lambda s: self.batches(s, k), range(first_step, self.config.train.steps, k),
                           self.config.train.prefetch)

  def evaluate(self, eval_fn, state, stop=lambda agree: False, dataset=None) -> dict | None:
    """Metrics over the validation split of `dataset` (default the run's), or None when `stop(agree)` turns true
    between batches (agree: whether processes may synchronise on it at this batch)."""
    return run_dir.evaluate(self.parts, eval_fn, state, batch_size=self.eval_batch_size,
                            max_batches=self.config.eval.batches, dataset=dataset, put=self.strategy.batch,
                            fetch=self.strategy.fetch, process_index=self.process_index,
                            process_count=self.process_count, prefetch=self.config.train.prefetch, stop=stop,
                            agree_every=guards.EVAL_AGREE_EVERY)


def parameter_counts(run) -> dict:
  """What run.json and the console say of the model: its parameters, those the optimizer changes (all but
  frozen ones: optim.freeze, a linear probe's backbone, LoRA's base weights) and the optimizer state's size."""
  total = models.count_params(run.shapes.params)
  opt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(run.shapes.opt_state))
  return {"total": total, "trainable": optim.trainable_count(run.config, run.shapes.params),
          "optimizer_state_bytes": int(opt_bytes)}


def per_device_bytes(state) -> str:
  """", X MiB of parameters per device" where a device holds a part of them (FSDP, a tensor axis), else ""."""
  leaves = [x for x in jax.tree_util.tree_leaves(state.params) if isinstance(x, jax.Array)]
  whole = sum(x.nbytes for x in leaves)
  first = jax.local_devices()[0]
  mine = sum(s.data.nbytes for x in leaves for s in x.addressable_shards if s.device == first)
  return f", {mine / 2**20:,.2f} MiB of parameters per device (of {whole / 2**20:,.2f})" if mine < whole else ""


def describe_parameters(run) -> str:
  counts = run.parameters
  total, trainable = counts["total"], counts["trainable"]
  share = "" if trainable == total else f", {trainable:,} trainable ({trainable / max(total, 1):.2%})"
  return f"{total:,} parameters{share}; optimizer state {counts['optimizer_state_bytes'] / 2**20:,.1f} MiB"


def extra_eval_sets(config, dataset) -> list[tuple[str, data.Dataset]]:
  """(name, dataset) of each eval.extra entry: the run's data config with the entry's data.* values."""
  out = []
  for name, overrides in configlib.eval_extra(config):
    extra = data.load_entry(config, overrides, f"eval.extra {name!r}", dataset, "the training data's")
    if data.seq_len(extra, config.model.context) != data.seq_len(dataset, config.model.context):
      raise DataError(f"eval.extra {name!r}: its examples have another length than the training data's; "
                      "evaluate data of the same shape")
    out.append((name, extra))
  return out


def enable_compilation_cache(config) -> None:
  """train.compilation_cache: compiled steps persist under $PRETRAIN_COMPILATION_CACHE (default
  ~/.cache/pretrain/compilation), so a rerun of the same shapes loads them instead of compiling. A cache
  directory JAX already has (JAX_COMPILATION_CACHE_DIR) is kept."""
  if not config.train.compilation_cache or jax.config.jax_compilation_cache_dir:
    return
  directory = os.environ.get("PRETRAIN_COMPILATION_CACHE") or os.path.expanduser("~/.cache/pretrain/compilation")
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # The eval step and init too, not only the train step.


def train(config, workdir: str, initialize=None) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the final eval metrics. `initialize(run, state)`, when
  given, turns the fresh state of a run that has no checkpoint yet into its starting state.

  Raises Preempted after SIGTERM/SIGINT (a checkpoint of the current step is saved first, with what the step
  still owed), and PretrainError for a non-finite step beyond `optim.skip_nonfinite` (nothing is saved then).
  """
  enable_compilation_cache(config)
  with guards.Preemption() as preemption:  # From the start: a signal during setup is honoured too.
    return _train(config, workdir, preemption, initialize)


def _train(config, workdir: str, preemption, initialize=None) -> dict:
  if config.init.workdir and initialize is None:
    raise ConfigError(f"init.workdir={config.init.workdir} names a pretrained run; fine-tune through "
                      "pretrain.finetune.train (python -m pretrain.main does), which loads it")
  guards.check_workdir(workdir)
  run = Run(config, workdir)
  config, t = run.config, run.config.train
  guards.check_resume_config(workdir, config)  # Before anything is written into the workdir.
  if run.process_index == 0:
    run_dir.write_config(workdir, config)
    run_dir.write_dataset(workdir, run.dataset)
  ledger.start(run)  # DIR/run.json: config, code version, packages, hardware; completed by ledger.finish.
  run.writer.start_wandb(config, workdir)
  ckpt = checkpoint.Checkpointer(workdir, keep=t.keep_checkpoints, async_save=t.async_checkpoints)
  start, state, saved = _restore_or_init(run, ckpt, initialize)
  window = actions.Window(run, start, saved.get("window"), last_saved_step=ckpt.latest_step,
                          skipped=run.writer.count_events("skipped_nonfinite", up_to=start))
  evaluate = actions.Evaluate(run, run.eval_fn(), stop=preemption.requested)
  save = actions.Checkpoint(run, ckpt, window)
  every = [actions.Log(run, window, optim.learning_rate(config), run.parts.flops_per_token()), evaluate, save]  # In order.
  owed = [a for a in every if a.name in saved.get("owed", ())]  # What a preemption left undone at `start`.
  run.writer.truncate_after(start, redo=[split for a in owed for split in a.splits])
  run.writer.console(f"{describe_parameters(run)}; {run.dataset.name}; {run.strategy.name} on "
                     f"{run.strategy.num_devices} device(s){per_device_bytes(state)}; steps {start}->{t.steps}")
  profile, train_fn, k = actions.Profile(run), run.train_fn(), t.steps_per_call

  def at_boundary(step, state, due):
    """The due actions, in order. After a signal (before them, or interrupting one), a checkpoint of `step` that
    records the actions still owed, so the rerun does them first; then stop."""
    owed = due
    if not preemption.requested(agree=bool(due)):  # Several processes agree only where they synchronise anyway.
      owed = next((due[i:] for i, action in enumerate(due) if not action(step, state)), None)
      if owed is None:
        return
    profile.stop()
    save(step, state, owed=[a.name for a in owed])
    ckpt.close()
    run.writer.close()
    raise Preempted(f"stopped by signal {preemption.signal} at step {step}; checkpoint saved in {ckpt.directory}; "
                    "rerun the same command to resume", preemption.exit_code)

  try:
    at_boundary(start, state, owed)
    window.restart_clock()
    for s, host_batch in zip(range(start, t.steps, k), run.train_batches(start)):
      profile.before_call(s)
      state, step_metrics = train_fn(state, run.strategy.batch(host_batch, steps_axis=True))
      profile.after_call(s + k, step_metrics)
      window.add(step_metrics)
      due = [a for a in every if a.due(s + k)]
      if due or preemption.requested(agree=False):
        window.collect()
        at_boundary(s + k, state, due)
        window.restart_clock()
    profile.stop()
    ckpt.close()
  except BaseException:
    ckpt.abandon()  # Background save threads must not outlive the error they caused.
    raise
  run.writer.close()
  ledger.finish(run)
  # Resumed at the end with nothing owed: report the saved state's metrics again.
  return evaluate.final or run.evaluate(evaluate.eval_fn, state)


def _restore_or_init(run, ckpt, initialize) -> tuple[int, step.TrainState, dict]:
  """(step, placed state, what the checkpoint saved beside it) from the newest good checkpoint, or a fresh
  state (through `initialize`, when given) at step 0."""
  abstract = run.strategy.abstract(run.shapes)  # The restore target, and the shardings a fresh state is built in.
  start, state, saved = ckpt.restore_latest_good(abstract, warn=run.writer.console)
  if start is not None:
    run.writer.console(f"resumed from {ckpt.directory}/{start}")
    if state.opt_state is None:  # Parameters only (an imported model): the optimizer starts here.
      shardings = jax.tree_util.tree_map(lambda a: a.sharding, abstract.opt_state)
      state = state.replace(opt_state=jax.jit(run.tx.init, out_shardings=shardings)(state.params))
  else:
    start, saved = 0, {}
    state = parallel.init(run.init_state, abstract)
    if initialize is not None:
      state = initialize(run, state)
  return start, run.strategy.place(state), saved
