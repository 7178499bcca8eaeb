"""safetensors files, read and written one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} (and
"__metadata__"), then the raw little-endian data. Reading seeks and reads each tensor into memory Python
returns to the system when it is dropped; writing computes each tensor only when its bytes are due, so
neither holds more than one tensor beside the model.
"""
import json
import os

import numpy as np

from pretrain.errors import CheckpointError

WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"


class Reader:
  """Their tensors by name, read one at a time from the safetensors files in hf_dir as float32 numpy arrays."""
  DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}

  def __init__(self, hf_dir: str):
    index = os.path.join(hf_dir, WEIGHTS_INDEX)
    if os.path.isfile(index):
      files = sorted(set(json.load(open(index))["weight_map"].values()))
    elif os.path.isfile(os.path.join(hf_dir, WEIGHTS)):
      files = [WEIGHTS]
    else:
      found = ", ".join(sorted(os.listdir(hf_dir))) if os.path.isdir(hf_dir) else "nothing"
      raise CheckpointError(f"{hf_dir} has no {WEIGHTS} (found: {found}); only safetensors are read, never pickle: "
                            "save the model with save_pretrained(DIR, safe_serialization=True)")
    self._where = {}
    for name in files:
      path = os.path.join(hf_dir, name)
      try:
        with open(path, "rb") as f:
          size = int.from_bytes(f.read(8), "little")
          header = json.loads(f.read(size))
      except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a safetensors file ({e}); save the model again with save_pretrained"
                              ) from None
      header.pop("__metadata__", None)
      self._where.update({key: (path, 8 + size, info) for key, info in header.items()})

  def names(self) -> list[str]:
    return sorted(self._where)

  def shape(self, name: str) -> tuple:
    return tuple(self._where[name][2]["shape"])

  def get(self, name: str) -> np.ndarray:
    path, start, info = self._where[name]
    if info["dtype"] == "BF16":
      import ml_dtypes  # JAX's own dependency.
      dtype = ml_dtypes.bfloat16
    elif info["dtype"] in self.DTYPES:
      dtype = self.DTYPES[info["dtype"]]
    else:
      raise CheckpointError(f"{path}: {name} is {info['dtype']}; weights are read from F32, BF16, F16 or F64")
    begin, end = info["data_offsets"]
    with open(path, "rb") as f:
      f.seek(start + begin)
      raw = f.read(end - begin)
    return np.frombuffer(raw, dtype).reshape(info["shape"]).astype(np.float32)

  def close(self):
    pass


def write(path: str, tensors) -> None:
  """Writes [(name, shape, () -> float32 array)] as one safetensors file (float32), calling each maker in turn."""
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for name, shape, _ in tensors:
    size = 4 * int(np.prod(shape, dtype=np.int64))
    header[name] = {"dtype": "F32", "shape": [int(d) for d in shape], "data_offsets": [offset, offset + size]}
    offset += size
  text = json.dumps(header, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 8)  # The data starts 8-byte aligned.
  with open(path + ".tmp", "wb") as f:
    f.write(len(text).to_bytes(8, "little"))
    f.write(text)
    for name, shape, make in tensors:
      array = np.ascontiguousarray(make(), dtype="<f4")
      if array.shape != tuple(shape):
        raise ValueError(f"{name}: made {array.shape}, declared {tuple(shape)}")
      array.tofile(f)
  os.replace(path + ".tmp", path)  # A reader never sees half a file.
