"""Orbax checkpoints of the whole train state, in DIR/checkpoints/<step>.

The state is saved as a topology-free pytree (the strategy unreplicates it first) and restored into an
abstract target that carries the shardings of the strategy that resumes, so a run saved on one device
layout resumes on another.
"""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from pretrain.errors import CheckpointError


class Checkpointer:
  def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, step: int, abstract_state):
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(f"checkpoint {self.directory}/{step} does not fit this model/optimizer "
                            f"({str(e).splitlines()[0][:300]}); use a new --workdir or the config it was "
                            "trained with") from None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _reader(directory: str) -> ocp.CheckpointManager:
  """A manager that only reads another run's checkpoints. Restoring part of a saved tree needs its own
  manager with a PyTree handler: a Checkpointer's manager is bound to StandardSave/Restore of whole states."""
  if not os.path.isdir(directory):
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
  tree = manager.item_metadata(chosen).tree
  manager.close()
  return chosen, tree


def restore_subtree(directory: str, step: int, target):
  """Restores only the entries `target` names (a nested dict of arrays giving shapes) as host numpy arrays."""
  manager = _reader(directory)
  restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  try:
    return manager.restore(step, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                             partial_restore=True))
  finally:
    manager.close()
