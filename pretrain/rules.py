"""Regex rules over '/'-joined parameter names, one parser and one matching rule for every config field that
holds them (optim.freeze, optim.lr_multipliers, optim.no_decay, optim.muon_exclude, parallel.fsdp_rules,
log.layer_groups, init.dont_load).

Matching is `re.search`: a pattern matches anywhere in the name unless it anchors itself (`^backbone/`,
`kernel$`). Where several rules could apply, the first one listed wins.
"""
import dataclasses
import re
from typing import Any, Callable

from pretrain.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Rule:
  pattern: re.Pattern
  value: Any = True

  def search(self, name: str):
    return self.pattern.search(name)


class Rules:
  """The entries of one config field, parsed. Plain fields hold regexes; valued ones hold "REGEX=VALUE"
  entries (the last '=' separates them), VALUE read by `parse_value` (a ValueError names a bad one)."""

  def __init__(self, key: str, entries, parse_value: Callable[[str], Any] | None = None, form: str = "REGEX=VALUE",
               example: str = ""):
    self.key, self.rules = key, []
    for entry in entries:
      pattern, value = str(entry), True
      if parse_value is not None:
        pattern, eq, text = pattern.rpartition("=")
        try:
          value = parse_value(text)
          if not eq or not pattern:
            raise ValueError
        except ValueError:
          raise ConfigError(f"{key} entry {entry!r} is not {form}; write e.g. {example!r}") \
            from None
      try:
        self.rules.append(Rule(re.compile(pattern), value))
      except re.error as e:
        raise ConfigError(f"{key} entry {entry!r} is not a regular expression ({e}); fix or remove it") from None

  def __bool__(self) -> bool:
    return bool(self.rules)

  def first(self, name: str) -> Rule | None:
    """The first rule whose pattern matches `name`, or None."""
    return next((r for r in self.rules if r.search(name)), None)

  def matches(self, name: str) -> bool:
    return self.first(name) is not None

  def value(self, name: str, default=None):
    """The value of the first matching rule, else `default`."""
    rule = self.first(name)
    return default if rule is None else rule.value

  def require_each_matches(self, names: list[str]) -> None:
    """A rule that names no parameter is a typo, not a choice: it would silently leave alone what it meant to
    change."""
    unused = [r.pattern.pattern for r in self.rules if not any(r.search(n) for n in names)]
    if unused:
      raise ConfigError(f"{self.key} {unused} match no parameter; names look like {names[:3]}")


def non_negative_float(text: str) -> float:
  value = float(text)
  if value < 0:
    raise ValueError(text)
  return value
