"""Orbax checkpoints of the whole train state, in DIR/checkpoints/<step>.

The state is saved as a topology-free pytree (the strategy unreplicates it first) and restored into an
abstract target that carries the shardings of the strategy that resumes, so a run saved on one device
layout resumes on another.
"""
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from pretrain.errors import CheckpointError
from pretrain import storage, tree
from pretrain.trainer import layout


class Checkpointer:
  """Saves and restores whole train states. Only committed checkpoints count: a step folder without
  Orbax's commit marker, or one that fails to restore, is moved aside (never deleted) with a warning,
  and the newest good one is used. Orbax deletes old checkpoints only after a newer one is committed."""

  def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
    self.directory = layout.checkpoints(workdir)
    # Object stores cannot rename a folder into place: there a step counts once its commit file is written.
    atomicity = ({"atomicity_options": ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode.COMMIT_FILE)}
                 if storage.is_remote(workdir) else {})
    self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
                                                 **atomicity)
    self.manager = self._manager()

  def _manager(self):
    # The handler is named up front so item_metadata works before the first save or restore.
    return ocp.CheckpointManager(self.directory, options=self._options, item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, loop_state: dict | None = None) -> None:
    """Saves `state` at `step`, with `loop_state` (plain JSON: what the loop needs beside the arrays to continue
    exactly, pretrain/trainer/actions.py) in the step's metadata, committed with it."""
    try:
      self.manager.save(step, args=ocp.args.StandardSave(state), custom_metadata=loop_state or {}, force=True)
    except Exception as e:  # OSError, or tensorstore's own error types for the same failures.
      raise CheckpointError(f"cannot write checkpoint {step} to {self.directory} ({_first_line(e)}); free space or "
                            f"fix permissions there, then rerun to resume from step {self.latest_step()}") from None

  def wait(self) -> None:
    """Blocks until pending saves are committed; errors of background saves surface here."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # A background save failed: raised here, never swallowed.
      raise CheckpointError(f"a checkpoint write to {self.directory} failed ({_first_line(e)}); free space or fix "
                            "permissions there, then rerun to resume from the last committed checkpoint") from None

  def restore(self, step: int, abstract_state):
    """The state saved at `step`, in the shardings of `abstract_state`. A checkpoint saved without optimizer
    state (pretrain.hf import writes parameters only) restores with opt_state None: the caller starts one."""
    if not any(k.startswith("opt_state") for k in tree.shapes(self.manager.item_metadata(step))):
      abstract_state = abstract_state.replace(opt_state=None)
    self._check_fits(step, abstract_state)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def _check_fits(self, step: int, abstract_state) -> None:
    """A complete checkpoint of another model is the user's mistake, not corruption: say what differs."""
    saved, wanted = tree.shapes(self.manager.item_metadata(step)), tree.shapes(abstract_state)
    problems = [f"{k}: missing" for k in sorted(set(wanted) - set(saved))]
    problems += [f"{k}: unexpected" for k in sorted(set(saved) - set(wanted))]
    problems += [f"{k}: {saved[k]} vs {wanted[k]}" for k in sorted(set(saved) & set(wanted)) if saved[k] != wanted[k]]
    if problems:
      raise CheckpointError(f"checkpoint {self.directory}/{step} does not fit this model/optimizer "
                            f"({'; '.join(problems[:6])}{' ...' if len(problems) > 6 else ''}); use a new --workdir "
                            "or the config it was trained with")

  def loop_state(self, step: int) -> dict:
    """The loop_state saved with checkpoint `step` ({} for checkpoints saved without one)."""
    return dict(self.manager.metadata(step).custom_metadata or {})

  def restore_latest_good(self, abstract_state, warn) -> tuple[int | None, object, dict]:
    """(step, state, loop_state) of the newest checkpoint that restores, or (None, None, {}) when there is none."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      if not storage.exists(storage.join(self.directory, str(step), "commit_success.txt")):
        self._quarantine(step, "it has no commit marker (a save that never finished)", warn)
        continue
      try:
        return step, self.restore(step, abstract_state), self.loop_state(step)
      except CheckpointError:
        raise  # A complete checkpoint of another model: not corruption, the user must choose.
      except Exception as e:  # Truncated or garbled files: tensorstore, zstd and JSON errors of many kinds.
        self._quarantine(step, f"it cannot be read ({_first_line(e)})", warn)
    return None, None, {}

  def _quarantine(self, step: int, why: str, warn) -> None:
    folder = storage.join(self.directory, str(step))
    aside = f"{folder}.corrupt-{int(time.time())}"
    if jax.process_index() == 0 and storage.exists(folder):
      storage.move_folder(folder, aside)
    warn(f"warning: skipping checkpoint {folder}: {why}; moved to {aside}")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
    self.manager.close()
    self.manager = self._manager()

  def close(self) -> None:
    self.wait()
    self.manager.close()

  def abandon(self) -> None:
    """On the way out of a failed run: stop Orbax's background threads without raising again."""
    try:
      self.manager.close()
    except Exception:  # The run is already failing with its own, clearer error.
      pass


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _reader(directory: str) -> ocp.CheckpointManager:
  """A manager that only reads another run's checkpoints. Restoring part of a saved tree needs its own
  manager with a PyTree handler: a Checkpointer's manager is bound to StandardSave/Restore of whole states."""
  if not storage.path(directory).is_dir():
    raise CheckpointError(f"{directory} does not exist; point --config.init.workdir at a run directory of pretrain.main")
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False),
                               item_handlers=ocp.PyTreeCheckpointHandler())


def saved_tree(directory: str, step: int | None = None):
  """(step, metadata tree) of checkpoint `step` (default the newest) in `directory`; leaves have .shape/.dtype."""
  manager = _reader(directory)
  steps = manager.all_steps()
  chosen = manager.latest_step() if step is None else step
  if chosen is None or chosen not in steps:
    manager.close()
    raise CheckpointError(f"{directory} has no checkpoint {'yet' if step is None else step} (steps: {sorted(steps)}); "
                          "train the run first or pick one of those steps with --config.init.step")
  metadata = manager.item_metadata(chosen).tree
  manager.close()
  return chosen, metadata


def restore_subtree(directory: str, step: int, target):
  """Restores only the entries `target` names (a nested dict of arrays giving shapes) as host numpy arrays."""
  manager = _reader(directory)
  restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  try:
    return manager.restore(step, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                             partial_restore=True))
  finally:
    manager.close()
