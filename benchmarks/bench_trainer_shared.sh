#!/usr/bin/env bash
# bench_trainer's samplers at once on one GPU, two processes each (the glyph studies run 8 students side by side):
# a sampler whose steps ask more of the GPU's time than the others' slows down here, not when it runs alone. Each
# process starts training at the same second; results in OUT/<sampler>_<i>/bench_trainer.{jsonl,md}, logs beside.
#
#   bash benchmarks/bench_trainer_shared.sh [OUT] [bench_trainer options...]   # OUT: results/gpu/shared
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu/shared}
shift $(($# > 0 ? 1 : 0))
mkdir -p "$out"
start=$(($(date +%s) + 30))  # after every process has imported torch and built its models
for sampler in full uniform ftis dis; do
    for copy in 0 1; do
        python3 benchmarks/bench_trainer.py --samplers "$sampler" --fractions 0.02 --steps 300 --start-at "$start" \
            --out "$out/${sampler}_$copy" "$@" >"$out/${sampler}_$copy.log" 2>&1 &
    done
done
wait
grep -H "^| [a-z]* | [0-9]" "$out"/*/bench_trainer.md
