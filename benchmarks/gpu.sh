#!/usr/bin/env bash
# The prepared GPU check (a few minutes on one H100): ViT-B/32 (random weights),
# 12 frames at 224 px.
#   1. a bf16 (autocast) training step of every method at batch 32, against full
#      fine-tuning: step time, training memory (allocator peak), the frozen-parameter check;
#      1b. vop, vop-c, vop-fc again with gradient checkpointing; 1c. vop checkpointing only
#      the first 4 or 6 image blocks; 1d. skipping unread token rows, before and after;
#   2. encoding throughput, fp32 against bf16, with the bf16 agreement (the methods whose
#      image tower differs; the subset baselines encode exactly like zero-shot);
#   3. vop / vop-fc scaling with frames and batch, and SDPA against explicit attention;
#      3b. the per-layer cost of VoP^C's context module (BiLSTM);
#   4. one table combining 1 and 2.
# Every figure is a ratio against a baseline run in the same process (see docs/performance.md).
# Without a CUDA device it prints that it skips and exits 0 (CI runs it that way).
#
#   bash benchmarks/gpu.sh            # results (JSON) in $VOP_BENCH_OUT or /tmp/vop-gpu-bench
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "benchmarks/gpu.sh: no NVIDIA GPU on this machine; skipping the GPU checks (nothing measured)."
    exit 0
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "benchmarks/gpu.sh: torch sees no CUDA device; skipping the GPU checks (nothing measured)."
    exit 0
fi
"$PY" -c "import vop" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
out=${VOP_BENCH_OUT:-/tmp/vop-gpu-bench}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi -L

echo "== 1. training step, batch 32 x 12 frames, bf16 autocast, every method against full =="
status=0
"$PY" benchmarks/train_step.py --device cuda --batch 32 --frames 12 --dtype bf16 --reps 5 \
    --json "$out/train_step.json" || status=1
echo "== 1b. the same for vop, vop-c, vop-fc with gradient checkpointing (full stays plain) =="
"$PY" benchmarks/train_step.py --device cuda --batch 32 --frames 12 --dtype bf16 --reps 5 \
    --methods vop,vop-c,vop-fc --checkpointing --json "$out/train_step_checkpointing.json" || status=1
echo "== 1c. vop with only the first 4 / 6 image blocks checkpointed (memory against time) =="
for k in 4 6; do
    "$PY" benchmarks/train_step.py --device cuda --batch 32 --frames 12 --dtype bf16 --reps 5 \
        --methods vop --checkpointing --checkpoint-image-blocks $k --json "$out/train_step_ckpt$k.json" || status=1
done
echo "== 1d. before/after skipping unread rows (step, saved activations, bf16 encode) =="
"$PY" benchmarks/unread_rows.py --device cuda --batch 32 --reps 5 || status=1
echo "== 2. encoding throughput, fp32 against bf16, batches 1 and 32 =="
"$PY" benchmarks/encode.py --device cuda --methods zero-shot,adapter-ffn,vop,vop-p,vop-c,vop-f,vop-fc \
    --batches 1,32 --reps 5 --json "$out/encode.json" || status=1
echo "== 3. scaling of vop / vop-fc (bf16), and SDPA against explicit attention =="
"$PY" benchmarks/scaling.py --device cuda --dtype bf16 --frames 4,8,12,16 --frames-batch 8 \
    --batches 8,32 --reps 3 --memory --attention-frames 4,8,12,16,32,64 || status=1
echo "== 3b. cost of VoP^C's context module (BiLSTM) per layer, against one ViT block =="
"$PY" benchmarks/context_module.py --device cuda --batch 32 --reps 20 || status=1
echo "== summary =="
[ -f "$out/train_step.json" ] && "$PY" benchmarks/summary.py --train "$out/train_step.json" --encode "$out/encode.json"
exit $status
