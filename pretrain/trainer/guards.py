"""What keeps a run from losing work or silently going wrong: preemption signals, workdir checks,
resuming with a changed config, and non-finite steps."""
import ctypes
import json
import os
import signal
import sys
import uuid

import jax
import numpy as np
from jax.experimental import multihost_utils

from pretrain import configlib, storage
from pretrain.trainer import layout
from pretrain.errors import CheckpointError, ConfigError, PretrainError

# Config groups whose change makes a checkpoint meaningless to continue from.
IDENTITY_GROUPS = ("model", "data", "objective")


EVAL_AGREE_EVERY = 16  # Eval batches between agreements on a signal, when several processes run.


class Preemption:
  """Turns SIGTERM/SIGINT into a request the loop honours between steps (and inside evaluation).

  With several processes, one signalled process is enough: `requested(agree=True)` agrees across
  processes (a blocking allgather) so all of them stop at the same step and take part in the final
  checkpoint. The loop agrees only where it synchronises anyway (log, eval, checkpoint steps, and every
  EVAL_AGREE_EVERY eval batches), so the steps between stay pipelined; until then a signal waits.
  """

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    _terminate_with_parent()
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    del frame
    self.signal = signum

  def requested(self, agree: bool = True) -> bool:
    local = self.signal is not None
    if jax.process_count() == 1:
      return local
    if not agree:
      return False
    flags = multihost_utils.process_allgather(np.array([int(self.signal or 0)]))
    if flags.any() and self.signal is None:
      self.signal = int(flags.max())
    return bool(flags.any())

  @property
  def exit_code(self) -> int:
    return 128 + int(self.signal or signal.SIGTERM)


def _terminate_with_parent() -> None:
  """Linux: if the process that started this run dies (a wrapper script preempted with SIGTERM, a
  killed launcher), this run gets SIGTERM too and stops with a checkpoint, instead of training on
  as an orphan beside the rerun."""
  if not sys.platform.startswith("linux") or os.getppid() == 1:
    return
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass  # Without prctl the run simply keeps the default behaviour.


def check_workdir(workdir: str) -> None:
  """Fails at start-up, before any work, when the workdir cannot be written."""
  if str(workdir).startswith("s3://"):
    raise PretrainError(f"--workdir {workdir}: Orbax writes checkpoint arrays through tensorstore's object-store "
                        "driver only for gs:// paths, so checkpoints cannot go to s3://; use a gs:// bucket or a "
                        "folder every host mounts (e.g. the bucket through mountpoint-s3)")
  try:
    storage.make_dirs(workdir)
    probe = storage.path(storage.join(workdir, f".write-test-{uuid.uuid4().hex}"))
    probe.write_text("ok")
    probe.unlink()
  except Exception as e:  # OSError locally; an object store's client raises its own kinds too.
    reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
    raise PretrainError(f"cannot write to --workdir {workdir} ({reason}); pick a writable directory") from None


def check_resume_config(workdir: str, config) -> None:
  """A workdir with checkpoints resumes only the same model, data and objective (unless allowed)."""
  path = layout.config(workdir)
  if not storage.exists(path) or not storage.path(layout.checkpoints(workdir)).is_dir():
    return
  try:
    saved = configlib.flatten(json.loads(storage.read_text(path)))
  except ValueError:
    raise CheckpointError(f"{path} is not valid JSON; restore it or start a new --workdir") from None
  current = configlib.flatten(json.loads(configlib.to_json(config)))
  # Keys only one side has are fields added (or removed) by a newer version of the code, not changes.
  differing = sorted(k for k in set(saved) & set(current)
                     if k.split(".")[0] in IDENTITY_GROUPS and _norm(saved[k]) != _norm(current[k]))
  if differing and not config.train.allow_config_change:
    shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differing[:8])
    more = f" (+{len(differing) - 8} more)" if len(differing) > 8 else ""
    raise ConfigError(f"{workdir} holds a run with a different config ({shown}{more}); use a new --workdir, "
                      "or --config.train.allow_config_change=true to resume anyway")


def _norm(v):
  return list(v) if isinstance(v, tuple) else v


def nonfinite_steps(step_metrics: list[dict], first_step: int, param_names: list[str]) -> list[tuple[int, str]]:
  """(step, first non-finite parameter group) for every dropped step in fetched per-call metrics."""
  bad, step_index = [], first_step
  for m in step_metrics:
    for i, finite in enumerate(np.atleast_1d(m["finite"])):
      step_index += 1
      if not finite:
        flags = np.atleast_2d(m["nonfinite_grads"])[i]
        group = param_names[int(np.argmax(flags))] if flags.any() else "the loss (gradients finite)"
        bad.append((step_index, group))
  return bad
