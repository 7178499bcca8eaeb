"""Model families, data sources and objectives are modules named by the config.

A plain name is a built-in: `model.family=gpt` is the module `pretrain.models.gpt`, `data.name=text` is
`pretrain.data.text`, `objective=next_token` is `pretrain.objectives.next_token`. A dotted name is a module
of your own on PYTHONPATH (`mylab.models.tiny`), imported by the same code path. Each kind's package
docstring states the interface its modules export; a module lacking a required function, or a name that does
not import, is refused in one line.
"""
import dataclasses
import importlib
import importlib.util
import pkgutil
import re
import types

from pretrain.errors import ConfigError

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_PLAIN = re.compile(r"[A-Za-z_]\w*")


@dataclasses.dataclass(frozen=True)
class Kind:
  key: str  # The config field that names a module of this kind.
  package: str  # Where the built-ins live.
  required: tuple[str, ...]  # What every module of this kind exports.
  what: str


FAMILY = Kind("model.family", "pretrain.models", ("build", "OBJECTIVES", "INPUTS"), "a model family")
SOURCE = Kind("data.name", "pretrain.data", ("load",), "a data source")
OBJECTIVE = Kind("objective", "pretrain.objectives", ("loss", "model_inputs"), "an objective")


def is_dotted(name: str) -> bool:
  return bool(_DOTTED.fullmatch(name))


def builtin(kind: Kind, name: str) -> types.ModuleType | None:
  """The built-in module `name` of this kind, or None when there is none (helper modules of the package that do
  not export the kind's interface are not built-ins)."""
  if not _PLAIN.fullmatch(name) or importlib.util.find_spec(f"{kind.package}.{name}") is None:
    return None
  module = importlib.import_module(f"{kind.package}.{name}")
  return module if all(hasattr(module, attr) for attr in kind.required) else None


def builtins(kind: Kind) -> list[str]:
  package = importlib.import_module(kind.package)
  return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if builtin(kind, m.name) is not None)


def load(kind: Kind, name: str, fallback: str | None = None) -> types.ModuleType:
  """The module `name` (the value of config field kind.key) names. A plain name that is no built-in falls back to
  the built-in `fallback` when given (data.name: a TFDS catalog name goes to the catalog source)."""
  name = str(name)
  if is_dotted(name):
    module = _import(kind, name)
    missing = [attr for attr in kind.required if not hasattr(module, attr)]
    if missing:
      raise ConfigError(f"{kind.key}={name}: module {module.__name__} ({module.__file__}) lacks {', '.join(missing)}, "
                        f"which {kind.what} must export; see the interface in {kind.package}/__init__.py")
    return module
  module = builtin(kind, name)
  if module is not None:
    return module
  if fallback is not None:
    return load(kind, fallback)
  raise ConfigError(f"unknown {kind.key}={name!r}: built-in ones are {', '.join(builtins(kind))}; or name a module "
                    "of your own by its dotted path (e.g. mylab.models.tiny, on PYTHONPATH)")


def _import(kind: Kind, name: str) -> types.ModuleType:
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name and (name == e.name or name.startswith(e.name + ".")):
      raise ConfigError(f"{kind.key}={name}: no module {e.name!r} on PYTHONPATH, so {name} cannot be imported; check "
                        f"the spelling, or add the folder holding its package to PYTHONPATH") from None
    raise ConfigError(f"{kind.key}={name}: importing it failed: {e}") from None
  except Exception as e:  # The module itself raised: its own bug, named in one line.
    first = (str(e).splitlines() or [""])[0]
    raise ConfigError(f"{kind.key}={name}: importing it failed ({type(e).__name__}: {first})") from None
