"""The project's own error types: each carries one line that names the problem and the fix."""


class PretrainError(Exception):
  """Base class; `pretrain.main` prints the message as one line and exits with status 2."""


class ConfigError(PretrainError):
  """A config key, type or value that cannot work."""


class DataError(PretrainError):
  """A dataset that is missing, empty, corrupt or cannot be prepared."""


class CheckpointError(PretrainError):
  """A checkpoint that cannot be restored into this model or cannot be written."""


class Preempted(PretrainError):
  """SIGTERM/SIGINT: the run saved a checkpoint at `step` and stops; rerunning the command resumes.

  Exit status: 143 after SIGTERM, 130 after SIGINT (the shell's 128 + signal number).
  """

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code
