"""Orbax checkpoints of the whole train state, in DIR/checkpoints/<step>.

The state is saved as a topology-free pytree (the strategy unreplicates it first) and restored into an
abstract target that carries the shardings of the strategy that resumes, so a run saved on one device
layout resumes on another.
"""
import os

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
