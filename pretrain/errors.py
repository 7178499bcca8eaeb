"""The project's own error types: each carries one line that names the problem and the fix."""


class PretrainError(Exception):
  """Base class; `pretrain.main` prints the message as one line and exits with status 2."""


class ConfigError(PretrainError):
  """A config key, type or value that cannot work."""


class DataError(PretrainError):
  """A dataset that is missing, empty, corrupt or cannot be prepared."""


class CheckpointError(PretrainError):
  """A checkpoint that cannot be restored into this model or cannot be written."""
