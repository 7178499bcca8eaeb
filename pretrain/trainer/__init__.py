"""The trainer: from a config to trained checkpoints.

  layout.py     every path inside a run directory
  run_dir.py    config or saved run -> dataset, model, optimizer, abstract state; the one evaluation function
  step.py       the jitted train and eval steps (sums and denominators)
  optim.py      optimizer and schedule; regex rules choose frozen, decayed and scaled parameters
  parallel.py   strategies: one device, pmap, jit over a (data, fsdp) Mesh
  checkpoint.py Orbax checkpoints of the whole train state
  actions.py    the loop's periodic actions: log, evaluate, checkpoint, profile
  train.py      the loop
  metrics.py, ledger.py, guards.py, layer_stats.py: where numbers go, run.json, input and signal guards
"""
