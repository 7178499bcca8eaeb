"""What the training loop does between jitted calls: a few actions, each due at its own steps.

Every action has a `name`, `due(step)` and `__call__(step, state) -> bool` (False: a signal interrupted it).
They share one Window, the train metrics of the steps since the last log row. A checkpoint saves the window
and the actions still owed at its step in its metadata, so a resumed run first does what a preemption left
undone (the log row, the evaluation) and then writes exactly the rows the uninterrupted run writes.
"""
import time

import jax
import numpy as np

from pretrain import data
from pretrain.trainer import guards, harness, metrics
from pretrain.errors import PretrainError


class Window:
  """Train metrics of the steps since the last log row: device outputs not yet fetched, then the finite steps'
  loss sums (added call by call, so the row's float is the same however the run was interrupted), the last
  step's scalars, and the device seconds they took. Fetching applies the non-finite policy."""

  def __init__(self, run, first_step: int, saved: dict | None, *, skipped: int, last_saved_step):
    saved = saved or {}
    self.loss_sum, self.count = saved.get("loss_sum", 0.0), saved.get("count", 0.0)
    self.last = saved.get("last", {})  # grad_norm and per-layer stats of the newest step.
    self.timed_steps, self.timed_seconds = saved.get("timed_steps", 0), saved.get("timed_seconds", 0.0)
    self.skipped, self._last_saved_step = skipped, last_saved_step
    self._run, self._pending, self._first = run, [], first_step
    self.restart_clock()

  def restart_clock(self) -> None:
    self._tick = time.perf_counter()

  def add(self, step_metrics) -> None:
    self._pending.append(step_metrics)

  def collect(self) -> None:
    """Waits for the pending calls (train time ends here), fetches their metrics, applies optim.skip_nonfinite."""
    if not self._pending:
      return
    jax.block_until_ready(self._pending[-1])
    self.timed_seconds += time.perf_counter() - self._tick
    run, fetched = self._run, self._run.strategy.fetch(self._pending)
    limit = run.config.optim.skip_nonfinite
    for bad_step, group in guards.nonfinite_steps(fetched, self._first, run.param_names):
      self.skipped += 1
      if self.skipped > limit:
        raise PretrainError(f"non-finite loss or gradient at step {bad_step}, first in {group}; nothing was saved "
                            f"after step {self._last_saved_step() or 0}. Lower optim.lr, check the data, or allow "
                            f"skips with --config.optim.skip_nonfinite=N")
      run.writer.write(bad_step, "events", {"skipped_nonfinite": self.skipped, "group": group})
      run.writer.console(f"step {bad_step:>6} | skipped: non-finite loss or gradient in {group} "
                         f"({self.skipped}/{limit} allowed)")
    for m in fetched:
      finite = np.atleast_1d(m["finite"])
      self.loss_sum += float(np.sum(m["loss_sum"][finite]))
      self.count += float(np.sum(m["count"][finite]))
      self.timed_steps += len(finite)
      self._first += len(finite)
    newest = fetched[-1]
    self.last = {"grad_norm": float(newest["grad_norm"][-1])}
    if "layer_stats" in newest:
      self.last.update(run.layer_stats.row({k: v[-1] for k, v in newest["layer_stats"].items()}))
    self._pending = []

  def take(self) -> dict:
    """The window's summary for a log row; the window starts again empty."""
    out = {"loss": self.loss_sum / max(self.count, 1.0), **self.last}
    if self.timed_seconds > 0:
      out["tokens_per_s"] = self.timed_steps * self._run.tokens_per_step / self.timed_seconds
    self.loss_sum, self.count, self.timed_steps, self.timed_seconds = 0.0, 0.0, 0, 0.0
    return out

  def saved(self) -> dict:
    """What a checkpoint keeps of the window (plain JSON)."""
    return {"loss_sum": self.loss_sum, "count": self.count, "last": self.last, "timed_steps": self.timed_steps,
            "timed_seconds": self.timed_seconds}


class Periodic:
  """Due every `every` steps and at the last one."""
  name = ""
  splits = ()  # The metrics.jsonl splits this action writes: redone at a resumed step it still owed.

  def __init__(self, every: int, last_step: int):
    self.every, self.last_step = every, last_step

  def due(self, step: int) -> bool:
    return step % self.every == 0 or step == self.last_step


class Log(Periodic):
  """The train row: mean loss over the window's finite steps, the learning rate of the last applied update,
  throughput and model FLOP/s (in total and per device)."""
  name, splits = "log", ("train",)

  def __init__(self, run, window: Window, lr, flops_per_token: float):
    super().__init__(run.config.train.log_every, run.config.train.steps)
    self.run, self.window, self.lr, self.flops_per_token = run, window, lr, flops_per_token
    self.peak = metrics.peak_flops(jax.devices()[0].device_kind, run.config.log.peak_flops)

  def __call__(self, step, state) -> bool:
    del state
    row = self.window.take()
    # The schedule advances with applied updates only (optax counts them), so a skipped step does not use one.
    row["lr"] = float(self.lr(max(step - self.window.skipped, 1) - 1))
    speed = row.get("tokens_per_s")
    if speed:
      row["model_flops_per_s"] = speed * self.flops_per_token
      row["model_flops_per_s_per_device"] = row["model_flops_per_s"] / self.run.strategy.num_devices
      if self.peak:  # Model FLOP utilisation: nanoGPT's count over the chip's dense bf16 peak.
        row["mfu"] = row["model_flops_per_s_per_device"] / self.peak
    memory = jax.local_devices()[0].memory_stats() or {}  # Accelerators report it; CPUs do not.
    if "peak_bytes_in_use" in memory:
      row["peak_memory_gib"] = memory["peak_bytes_in_use"] / 2**30
    if isinstance(self.run.dataset.train, data.Mixture):  # A closed form of the step: a resumed run writes the same.
      row.update(self.run.dataset.train.tokens_given(step, self.run.config.train.batch_size, self.run.seq_len))
    self.run.writer.write(step, "train", row)
    text = f"step {step:>6} | loss {row['loss']:.4f} | lr {row['lr']:.2e}"
    if speed:
      eta = (self.last_step - step) * self.run.tokens_per_step / speed
      text += (f" | {speed:,.0f} tok/s | {row['model_flops_per_s'] / 1e9:.1f} GFLOP/s"
               f"{' | MFU %.1f%%' % (100 * row['mfu']) if 'mfu' in row else ''} | eta {metrics.format_duration(eta)}")
    self.run.writer.console(text)
    return True


class Evaluate(Periodic):
  """Scores the validation split and every eval.extra dataset; each writes its own split (val, NAME)."""
  name = "evaluate"

  def __init__(self, run, eval_fn, stop):
    super().__init__(run.config.train.eval_every, run.config.train.steps)
    self.run, self.eval_fn, self.stop = run, eval_fn, stop
    self.splits = tuple(name for name, _ in run.eval_sets)
    self.final = None  # The newest val metrics.
    self.benchmarks = harness.InLoop(run) if run.config.eval.harness_tasks else None

  def __call__(self, step, state) -> bool:
    for name, dataset in self.run.eval_sets:
      out = self.run.evaluate(self.eval_fn, state, stop=self.stop, dataset=dataset)
      if out is None:
        return False
      if step != self.last_step:  # The confusion matrix is the final evaluation's.
        out = {k: v for k, v in out.items() if k not in ("confusion", "labels")}
      if name == "val" and self.benchmarks is not None:  # lm-eval's scores join the val row.
        out.update(self.benchmarks(state))
      self.run.writer.write(step, name, out)
      label = name if name == "val" or name in dict(self.run.dataset.sources) else f"{name} (eval.extra)"
      self.run.writer.console(f"step {step:>6} | {label} loss {out['loss']:.4f} ± {out['loss_sem']:.4f} | "
                              f"{out['bits_per_token']:.4f} bits/token"
                              f"{' | %.4f bits/byte' % out['bits_per_byte'] if 'bits_per_byte' in out else ''}"
                              f"{metrics.describe_eval(out)}")
      if name == "val":
        if self.benchmarks is not None:
          self.run.writer.console(f"step {step:>6} | " + " | ".join(
              f"{k.removeprefix('harness/')} {v:.4f}" for k, v in out.items()
              if k.startswith("harness/") and "_stderr" not in k))
        self.final = out
    return True


class Checkpoint(Periodic):
  """Saves the state with the window and the actions it still owes; the rows up to it are flushed with it."""
  name = "checkpoint"

  def __init__(self, run, ckpt, window: Window):
    super().__init__(run.config.train.checkpoint_every, run.config.train.steps)
    self.run, self.ckpt, self.window = run, ckpt, window

  def __call__(self, step, state, owed=()) -> bool:
    if step == self.ckpt.latest_step():  # Stopped again at the step it resumed from: that checkpoint holds it.
      return True
    self.ckpt.save(step, self.run.strategy.for_checkpoint(state),
                   {"window": self.window.saved(), "owed": [a for a in owed if a != self.name]})
    self.run.writer.flush()  # On an object store, the rows up to this checkpoint are there with it.
    return True


class Profile:
  """train.profile_steps=(START, END): a jax.profiler trace of the calls that run steps START+1..END, written
  where TensorBoard's profile plugin reads it. Process 0 only; not a boundary action (it acts every call)."""

  def __init__(self, run):
    steps = tuple(run.config.train.profile_steps)
    self.directory = run.writer.tensorboard_local
    self.start, self.end = steps if steps and self.directory else (None, None)
    self.active = False

  def before_call(self, step: int) -> None:
    if self.start is not None and not self.active and self.start <= step < self.end:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after_call(self, done: int, outputs) -> None:
    if self.active and done >= self.end:
      self.stop(outputs)

  def stop(self, outputs=None) -> None:
    if self.active:
      jax.block_until_ready(outputs)
      jax.profiler.stop_trace()
      self.active, self.start = False, None
