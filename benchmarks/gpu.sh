#!/bin/bash
# One H200 (or any CUDA GPU), nanoGPT's bench.py and ours back to back, one table, within ~8 minutes.
# Needs: jax with CUDA, torch (the device image has both), and nanoGPT's source in device/nanogpt
# (copy ../shared/peers/nanogpt there; device/ is git-ignored).
# Usage: bash benchmarks/gpu.sh [BATCH ...]      (default batches: 12 32)
set -euo pipefail
cd "$(dirname "$0")/.."
batches=${*:-12 32}
peer=device/nanogpt
out=$(mktemp -d)
for b in $batches; do
  # nanoGPT: GPT-2 124M, random tokens, torch.compile, bf16 autocast; its own MFU line.
  (cd "$peer" && timeout 240 python bench.py --batch_size="$b" --compile=True --real_data=False 2>&1) \
    | tee "$out/nanogpt_$b.log" | grep -E "time per iteration|MFU" | tail -n 2 || true
  timeout 300 python -m pretrain.main --config configs/gpt2_124m.py:bench --workdir "$out/ours_$b" \
    --config.train.batch_size="$b" > "$out/ours_$b.log" 2>&1 || tail -n 5 "$out/ours_$b.log"
done
python - "$out" $batches <<'PY'
import json, re, statistics, sys
out, batches = sys.argv[1], sys.argv[2:]
n_params = 123.59e6  # GPT-2 124M without position embeddings, vocab 50304 (nanoGPT's count)
flops_per_token = 6 * n_params + 12 * 12 * 12 * 64 * 1024
print("| run | batch | ms/iter | tokens/s | MFU (989 TFLOP/s bf16) | peak memory |")
print("|---|---|---|---|---|---|")
for b in batches:
    log = open(f"{out}/nanogpt_{b}.log").read()
    ms = [float(x) for x in re.findall(r"time per iteration: ([\d.]+)ms", log)]
    if ms:
        t = ms[-1]
        tps = int(b) * 1024 / (t / 1000)
        print(f"| nanoGPT bench.py | {b} | {t:.1f} | {tps:,.0f} | {tps * flops_per_token / 989e12:.1%} | |")
    rows = [json.loads(l) for l in open(f"{out}/ours_{b}/metrics.jsonl")]
    train = [r for r in rows if r["split"] == "train"][1:]
    if train:
        tps = statistics.median(r["tokens_per_s"] for r in train)
        mem = max((r.get("peak_memory_gib", 0) for r in train), default=0)
        print(f"| pretrain gpt2_124m:bench | {b} | {int(b) * 1024 / tps * 1000:.1f} | {tps:,.0f} | "
              f"{tps * flops_per_token / 989e12:.1%} | {mem:.1f} GiB |")
PY
