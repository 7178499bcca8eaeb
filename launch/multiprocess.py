"""Start P processes on this machine that form one JAX job over P x D CPU devices.

  python -m launch.multiprocess --processes 2 --devices-per-process 2 -- --config configs/quickstart.py --workdir W

Each process runs `python -m pretrain.main <args>` with PRETRAIN_COORDINATOR / _NUM_PROCESSES /
_PROCESS_ID set (pretrain.distributed calls jax.distributed.initialize) and D fake CPU devices. Without
an explicit --config.parallel.strategy the job uses `mesh` (data parallel over all P x D devices).
Process 0's output is shown; the others' goes to WORKDIR/logs/process_<i>.log.
"""
import argparse
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def commands(processes: int, devices: int, args: list[str], port: int):
  """(argv, extra environment) of every process."""
  if not any(a.startswith("--config.parallel.strategy") for a in args):
    args = [*args, "--config.parallel.strategy=mesh"]
  args = [*args, f"--config.parallel.cpu_devices={devices}"]  # Over a config's own count (e.g. :cpu's 2).
  out = []
  for i in range(processes):
    env = {"PRETRAIN_COORDINATOR": f"127.0.0.1:{port}", "PRETRAIN_NUM_PROCESSES": str(processes),
           "PRETRAIN_PROCESS_ID": str(i), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    out.append(([sys.executable, "-m", "pretrain.main", *args], env))
  return out


def _workdir(args: list[str]) -> str:
  for i, a in enumerate(args):
    if a == "--workdir" and i + 1 < len(args):
      return args[i + 1]
    if a.startswith("--workdir="):
      return a.split("=", 1)[1]
  return "."


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices-per-process", type=int, default=1)
  parser.add_argument("--port", type=int, default=0, help="Coordinator port; 0 picks a free one.")
  parser.add_argument("--dry-run", action="store_true", help="Print the commands instead of running them.")
  parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the pretrain.main arguments")
  opts = parser.parse_args(argv)
  args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
  cmds = commands(opts.processes, opts.devices_per_process, args, opts.port or free_port())
  if opts.dry_run:
    for argv_i, env in cmds:
      print(" ".join(f"{k}={v}" for k, v in env.items()), " ".join(argv_i))
    return 0
  logs = os.path.join(_workdir(args), "logs")
  os.makedirs(logs, exist_ok=True)
  procs = []
  for i, (argv_i, env) in enumerate(cmds):
    out = None if i == 0 else open(os.path.join(logs, f"process_{i}.log"), "w")
    procs.append(subprocess.Popen(argv_i, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT if out else None))
  try:
    while any(p.poll() is None for p in procs):
      if any(p.returncode not in (None, 0) for p in procs):  # One failed: the job cannot finish.
        time.sleep(2)
        for p in procs:
          if p.poll() is None:
            p.terminate()
      time.sleep(0.2)
  except KeyboardInterrupt:
    for p in procs:
      p.terminate()
    raise
  codes = [p.wait() for p in procs]
  for i, code in enumerate(codes):
    if code:
      print(f"process {i} exited with status {code}" + (f"; see {logs}/process_{i}.log" if i else ""), file=sys.stderr)
  return max(codes, key=abs) if any(codes) else 0


if __name__ == "__main__":
  sys.exit(main())
