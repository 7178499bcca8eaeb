"""Run directories wherever Orbax can write: local folders, `gs://` and `s3://` (through etils.epath, the
layer Orbax and TFDS use). Local paths are made absolute; URLs are kept as written, so every host of a
job names the same place.

Object stores have no append and no rename of folders, and an object is replaced whole by each write;
the helpers here take the one way that is correct on both kinds of storage.
"""
import os

from etils import epath


def is_remote(path) -> bool:
  return "://" in os.fspath(path)


def path(p) -> epath.Path:
  s = os.fspath(p)
  return epath.Path(s if is_remote(s) else os.path.abspath(s))


def join(p, *parts) -> str:
  """The path as a string (for Orbax, messages and config.json)."""
  return os.fspath(path(p).joinpath(*parts))


def exists(p) -> bool:
  return path(p).exists()


def read_text(p) -> str:
  return path(p).read_text()


def write_text(p, text: str) -> None:
  """Replaces the file at once: a kill leaves the old text or the new, never half of it (locally by a
  rename; an object store's write is atomic by itself)."""
  target = path(p)
  if is_remote(p):
    target.write_text(text)
    return
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_name(target.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, target)


def make_dirs(p) -> None:
  path(p).mkdir(parents=True, exist_ok=True)  # A no-op on object stores, where folders are prefixes.


def listdir(p) -> list[str]:
  folder = path(p)
  return sorted(child.name for child in folder.iterdir()) if folder.is_dir() else []


def move_folder(src, dst) -> None:
  """Moves a folder aside, keeping every file: a rename locally; on an object store, a copy of each file
  then the removal of the original (object stores cannot rename folders)."""
  src, dst = path(src), path(dst)
  if not is_remote(src):
    os.rename(src, dst)
    return
  for f in src.rglob("*"):
    if f.is_file():
      target = dst / f.relative_to(src)
      target.parent.mkdir(parents=True, exist_ok=True)
      f.copy(target)
  src.rmtree()
