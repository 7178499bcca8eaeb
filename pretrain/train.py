"""The training loop: data -> model -> jitted steps -> metrics and checkpoints, resumable at any step.

Init / resume order (one way, always):
  1. validate the config; load the dataset; build model, optimizer and strategy;
  2. the state's abstract shape (jax.eval_shape of init, with the strategy's shardings);
  3. if DIR/checkpoints has a step, restore it straight into that abstract state: params, optimizer
     state and step; otherwise init a fresh state from the seed, computed in its shards (a fine-tuning
     run then puts the pretrained run's parameters in place of the fresh ones);
  4. drop metric lines past the restored step and continue; batches and dropout keys depend only on
     (seed, step), so the continuation is the uninterrupted run.
"""
import functools
import os
import time

import jax
import numpy as np

from pretrain import (checkpoint, configlib, data, finetune, guards, ledger, metrics, models, objectives, optim, parallel,
                      step, storage)
from pretrain.errors import ConfigError, Preempted, PretrainError


def count_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


class Run:
  """Everything a loop needs, built once; `evaluate` and `train` can be used from a notebook."""

  def __init__(self, config, workdir: str):
    config = finetune.resolve_config(config)  # A pretrained backbone's architecture, for fine-tuning runs.
    self.config, self.workdir = config, workdir
    self.strategy = parallel.make(config)  # First to touch the devices: it may set their number.
    self.process_index, self.process_count = jax.process_index(), jax.process_count()
    configlib.validate(config, num_devices=self.strategy.num_devices)
    self.dataset = data.load(config)
    self.seq_len = data.seq_len(self.dataset, config.model.context)
    self.model = models.build(config, self.dataset, data_axis=self.strategy.data_axis)
    if config.objective not in objectives.OBJECTIVES:
      raise ConfigError(f"unknown objective={config.objective!r}; use one of {', '.join(objectives.OBJECTIVES)}")
    self.objective = objectives.OBJECTIVES[config.objective]
    self.tx = optim.make(config)
    self.eval_batch_size, self.eval_accum_steps = configlib.eval_batching(config, self.strategy.num_devices)
    self.writer = metrics.MetricWriter(workdir, enabled=self.process_index == 0)
    sample = data.train_batch(self.dataset.train, 0, seed=config.seed, batch_size=config.train.batch_size,
                              seq_len=self.seq_len)
    self.example_inputs = example_inputs = objectives.MODEL_INPUTS[config.objective](sample)[:1]
    self.init_state = functools.partial(step.init_state, self.model, self.tx, example_inputs, config.seed)

  def train_fn(self):
    """The compiled train call the loop runs: train.steps_per_call updates, state donated."""
    c = self.config
    return self.strategy.train(functools.partial(step.make_train_step, self.model, self.objective, self.tx,
                                                 seed=c.seed, accum_steps=c.optim.accum_steps), c.train.steps_per_call)

  def eval_fn(self):
    """The compiled eval step: sums over one eval batch, eval.micro_batch_size rows at a time."""
    return self.strategy.evaluate(functools.partial(step.make_eval_step, self.model, self.objective,
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

  def evaluate(self, eval_fn, state, stop=lambda agree: False) -> dict | None:
    """Metrics over the validation split, or None when `stop(agree)` turns true between batches (agree:
    whether processes may synchronise on it at this batch)."""
    batch_size = self.eval_batch_size
    kw = dict(batch_size=batch_size, seq_len=self.seq_len, max_batches=self.config.eval.batches)
    batches = data.prefetched(
        lambda b: data.eval_batch(self.dataset.val, b, process_index=self.process_index,
                                  process_count=self.process_count, **kw),
        range(data.num_eval_batches(self.dataset.val, **kw)), self.config.train.prefetch)
    sums = []
    for i, b in enumerate(batches):
      if stop(i % guards.EVAL_AGREE_EVERY == 0):
        return None
      sums.append(eval_fn(state, self.strategy.batch(b)))
    out = metrics.summarize_eval(self.strategy.fetch(sums))
    if self.config.objective == "next_token":
      whole = len(sums) == data.num_eval_batches(self.dataset.val, batch_size=batch_size, seq_len=self.seq_len)
      out = metrics.against_references(out, self.dataset.metadata, whole_split=whole)
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


def train(config, workdir: str) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the final eval metrics.

  Raises Preempted after SIGTERM/SIGINT (a checkpoint of the current step is saved first), and
  PretrainError for a non-finite step beyond `optim.skip_nonfinite` (nothing is saved then).
  """
  enable_compilation_cache(config)
  with guards.Preemption() as preemption:  # From the start: a signal during setup is honoured too.
    return _train(config, workdir, preemption)


def _train(config, workdir: str, preemption) -> dict:
  guards.check_workdir(workdir)
  run = Run(config, workdir)
  config = run.config
  guards.check_resume_config(workdir, config)  # Before anything is written into the workdir.
  t, strategy = config.train, run.strategy
  if run.process_index == 0:
    storage.write_text(storage.join(workdir, "config.json"), configlib.to_json(config))
  ledger.start(run)  # DIR/run.json: config, code version, packages, hardware; completed by ledger.finish.
  ckpt = checkpoint.Checkpointer(workdir, keep=t.keep_checkpoints, async_save=t.async_checkpoints)
  shapes = jax.eval_shape(run.init_state)  # Nothing is allocated until the state is built in its shards.
  num_params = count_params(shapes.params)
  family_params = shapes.params.get("backbone", shapes.params)  # A classifier keeps the family's network there.
  position_params = int(np.prod(family_params["wpe"]["embedding"].shape)) if "wpe" in family_params else 0
  flops_per_token = models.flops_per_token(config, num_params, position_params, run.model,
                                           step.variables(shapes.params, shapes.model_state), run.example_inputs)
  param_names = optim.param_names(shapes.params)
  abstract = strategy.abstract(shapes)  # The restore target, and the shardings a fresh state is built in.
  start, state = ckpt.restore_latest_good(abstract, warn=run.writer.console)
  if start is not None:
    run.writer.console(f"resumed from {ckpt.directory}/{start}")
  else:
    start = 0
    state = finetune.load_pretrained(config, run.model, run.tx, parallel.init(run.init_state, abstract),
                                     log=run.writer.console, vocabulary=data.vocabulary(run.dataset))
  state = strategy.place(state)
  run.writer.truncate_after(start)
  run.writer.console(f"{num_params:,} parameters; {run.dataset.name}; {strategy.name} on "
                     f"{strategy.num_devices} device(s); steps {start}->{t.steps}")

  k = t.steps_per_call
  train_fn, eval_fn = run.train_fn(), run.eval_fn()
  lr = optim.learning_rate(config)
  tokens_per_step = t.batch_size * run.seq_len
  skipped = run.writer.count_events("skipped_nonfinite", up_to=start)

  def stop_here(done):
    ckpt.save(done, strategy.for_checkpoint(state))
    ckpt.close()
    run.writer.close()
    raise Preempted(f"stopped by signal {preemption.signal} at step {done}; checkpoint saved in {ckpt.directory}; "
                    "rerun the same command to resume", preemption.exit_code)

  try:
    if preemption.requested():
      stop_here(start)
    pending, window, timed_steps, timed_seconds, final = [], [], 0, 0.0, None
    pending_first = start
    tick = time.perf_counter()
    for s, host_batch in zip(range(start, t.steps, k), run.train_batches(start)):
      state, step_metrics = train_fn(state, strategy.batch(host_batch, steps_axis=True))
      pending.append(step_metrics)
      done, timed_steps = s + k, timed_steps + k
      is_last = done == t.steps
      log, evaluate, save = (done % t.log_every == 0 or is_last, done % t.eval_every == 0 or is_last,
                             done % t.checkpoint_every == 0 or is_last)
      preempted = preemption.requested(agree=log or evaluate or save)  # Several processes agree only there.
      if not (log or evaluate or save or preempted):
        continue
      jax.block_until_ready(step_metrics)  # Train time ends here; eval and saving are not counted in tokens/s.
      timed_seconds += time.perf_counter() - tick
      fetched = strategy.fetch(pending)
      for bad_step, group in guards.nonfinite_steps(fetched, pending_first, param_names):
        skipped += 1
        if skipped > config.optim.skip_nonfinite:
          raise PretrainError(f"non-finite loss or gradient at step {bad_step}, first in {group}; nothing was saved "
                              f"after step {ckpt.latest_step() or 0}. Lower optim.lr, check the data, or allow "
                              f"skips with --config.optim.skip_nonfinite=N")
        run.writer.write(bad_step, "events", {"skipped_nonfinite": skipped, "group": group})
        run.writer.console(f"step {bad_step:>6} | skipped: non-finite loss or gradient in {group} "
                           f"({skipped}/{config.optim.skip_nonfinite} allowed)")
      window.extend(fetched)
      pending, pending_first = [], done
      if log:
        finite = [np.atleast_1d(m["finite"]) for m in window]
        loss = (sum(float(np.sum(m["loss_sum"][f])) for m, f in zip(window, finite))
                / max(sum(float(np.sum(m["count"][f])) for m, f in zip(window, finite)), 1.0))
        tokens_per_s = timed_steps * tokens_per_step / timed_seconds
        row = {"loss": loss, "lr": float(lr(done - 1)), "grad_norm": float(window[-1]["grad_norm"][-1]),
               "tokens_per_s": tokens_per_s, "model_flops_per_s": tokens_per_s * flops_per_token}
        memory = jax.local_devices()[0].memory_stats() or {}  # Accelerators report it; CPUs do not.
        if "peak_bytes_in_use" in memory:
          row["peak_memory_gib"] = memory["peak_bytes_in_use"] / 2**30
        run.writer.write(done, "train", row)
        eta = (t.steps - done) * tokens_per_step / tokens_per_s
        run.writer.console(f"step {done:>6} | loss {loss:.4f} | lr {row['lr']:.2e} | {tokens_per_s:,.0f} tok/s | "
                           f"{row['model_flops_per_s'] / 1e9:.1f} GFLOP/s | eta {metrics.format_duration(eta)}")
        window, timed_steps, timed_seconds = [], 0, 0.0
      if preempted:  # After the log row, so a stop at a log step loses no train metrics.
        stop_here(done)
      if evaluate:
        final = run.evaluate(eval_fn, state, stop=preemption.requested)
        if final is None:
          stop_here(done)
        run.writer.write(done, "val", final)
        extra = metrics.describe_references(final)
        extra += f" | accuracy {final['accuracy']:.4f}" if "accuracy" in final else ""
        run.writer.console(f"step {done:>6} | val loss {final['loss']:.4f} ± {final['loss_sem']:.4f} | "
                           f"{final['bits_per_token']:.4f} bits/token{extra}")
      if save:
        ckpt.save(done, strategy.for_checkpoint(state))
        run.writer.flush()  # On an object store, the rows up to this checkpoint are there with it.
      tick = time.perf_counter()
    ckpt.close()
  except BaseException:
    ckpt.abandon()  # Background save threads must not outlive the error they caused.
    raise
  run.writer.close()
  ledger.finish(run)
  if final is None:  # Resumed at the end: report the saved state's metrics again.
    final = run.evaluate(eval_fn, state)
  return final
