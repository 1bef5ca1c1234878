#!/usr/bin/env bash
# One lease of the GPU machine, in one call: the large-scale benchmarks (bench_head, bench_step) and the short
# glyph studies (classification and re-ID, 3 seeds), each stage time-boxed so that a slow one cannot starve the
# next; what is finished is packed into $OUT/results.tar after every stage, so a call stopped at its limit still
# brings it back.
#
#   bash benchmarks/device_session.sh prepare   # here, where the fonts and the network are (about a minute)
#   bash benchmarks/device_session.sh run       # there: the device tool's `run`, carry [".device/glyphs.tar.xz",
#                                               # ".device/wheels"], timeout_s 600
#   bash benchmarks/device_session.sh run profile:120 reid:560   # only the stages named, each with the second
#                                                                # of the call at which it must end (the known
#                                                                # ones: stage_command)
#   bash benchmarks/device_session.sh run many_classes:590      # the 10,000-class study: carry
#                                                        # [".device/glyphs-10k.tar.xz", ".device/wheels-core"]
#
# prepare renders the two GB2312 level-1 glyph tasks and the 10,000-class one (the GPU machine has no fonts), packs
# them with xz (62 MB of images shrink to 27 MB, under the 64 MiB a call may carry; the 10,000-class task apart, 54 MB)
# and downloads the wheels that machine lacks (datasets, evaluate and theirs) plus the transformers and timm this
# project was tested with, and py-spy. `.device/` must be in .git/info/exclude. Unpack results.tar at the
# repository's root: benchmarks/results/gpu/ and the studies' folders.
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
    set -e
    grep -qx "/.device/" .git/info/exclude || echo "/.device/" >>.git/info/exclude
    mkdir -p .device/wheels
    local options=(--glyph_charset gb2312-level1 --glyph_system_fonts true)
    hf-dis render-glyphs --task classification "${options[@]}" --output_dir .device/glyphs-cls
    hf-dis render-glyphs --task reid "${options[@]}" --output_dir .device/glyphs-reid
    tar -C .device -cf - glyphs-cls glyphs-reid | xz -9 -T2 >.device/glyphs.tar.xz
    # The 10,000-class task (benchmarks/studies/glyphs_10k_cpu.yaml says how it is drawn): 10 more font packages.
    fc-list | grep -q TW-Kai || apt-get install -y -q --no-install-recommends "${MANY_CLASS_FONTS[@]}" >/dev/null
    hf-dis render-glyphs --task classification --glyph_system_fonts true --glyph_classes 10000 --glyph_copies 1 \
        --glyph_families "${MANY_CLASS_FAMILIES[@]}" --output_dir .device/glyphs-10k
    tar -C .device -cf - glyphs-10k | xz -9 -T2 >.device/glyphs-10k.tar.xz
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .device/wheels datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 \
        transformers==5.24.0 timm==1.0.31 py-spy==0.4.3
    # What a call carrying the 10,000-class task (54 MB) has room for: the machine's own transformers then.
    mkdir -p .device/wheels-core
    cp .device/wheels/{datasets,dill,evaluate,fsspec,multiprocess,timm}-*.whl .device/wheels-core/
    du -sh .device/glyphs.tar.xz .device/glyphs-10k.tar.xz .device/wheels .device/wheels-core
}

MANY_CLASS_FONTS=(fonts-arphic-bsmi00lp fonts-babelstone-han fonts-droid-fallback fonts-hanazono fonts-ipamj-mincho
    fonts-seto fonts-cns11643-kai fonts-cns11643-sung fonts-cwtex-kai fonts-cwtex-ming)
MANY_CLASS_FAMILIES=("AR PL Mingti2L Big5" "BabelStone Han" "Droid Sans Fallback" HanaMinA IPAmjMincho SetoFont
    "TW Kai" "TW Sung" cwTeXKai cwTeXMing)

# The studies the stages run (their committed runs seed each study's results.jsonl there, so that only the missing
# runs are trained, against a retrained teacher), and the stages with the second of the call at which each must end
# (the call's limit is 600 s) when none are named.
STUDIES=(glyphs_gb2312_classification_short glyphs_reid_short glyphs_reid_short_alpha09 glyphs_reid_short_eps05
    glyphs_reid_short_recipe glyphs_10k_short)
DEFAULT_STAGES=(reid:300 reid_recipe:560)

stage_command() {
    case "$1" in
    bench_head) echo python3 benchmarks/bench_head.py --out benchmarks/results/gpu ;;
    bench_step) echo python3 benchmarks/bench_step.py --out benchmarks/results/gpu ;;
    trainer) echo python3 benchmarks/bench_trainer.py --profile --steps 110 --out benchmarks/results/gpu ;;
    trainer_shared) echo bash benchmarks/bench_trainer_shared.sh ;;  # 8 processes on one GPU, as in the studies
    trainer_c100) echo python3 benchmarks/bench_trainer.py --classes 100 --steps 110 --out benchmarks/results/gpu/c100 ;;
    trainer_c100_compiled)  # the same with the trainer's compile_loss
        echo python3 benchmarks/bench_trainer.py --classes 100 --steps 110 --compile-loss \
            --out benchmarks/results/gpu/c100_compiled ;;
    profile) echo python3 benchmarks/bench_head.py --profile --classes 100 3755 1000000 --samplers uniform dis \
        --out benchmarks/results/gpu/profile ;;
    classification)  # with where its runs spend their time: py-spy once its students run, and (if the machine
        # refuses py-spy's ptrace) every process's own stack samples (benchmarks/stack_sampling)
        echo env HF_DIS_STACK_SAMPLES=benchmarks/results/gpu/stacks_classification \
            PYTHONPATH=benchmarks/stack_sampling:${PYTHONPATH:-} \
            bash benchmarks/with_py_spy.sh 75 60 benchmarks/results/gpu/py_spy_classification.txt \
            python3 benchmarks/reproduce.py benchmarks/studies/glyphs_gb2312_classification_short.yaml --jobs 8 ;;
    reid) echo python3 benchmarks/reproduce.py benchmarks/studies/glyphs_reid_short.yaml --jobs 8 ;;
    reid_alpha09) echo python3 benchmarks/reproduce.py benchmarks/studies/ablations/glyphs_reid_short_alpha09.yaml --jobs 6 ;;
    reid_eps05) echo python3 benchmarks/reproduce.py benchmarks/studies/ablations/glyphs_reid_short_eps05.yaml --jobs 6 ;;
    reid_recipe) echo python3 benchmarks/reproduce.py benchmarks/studies/ablations/glyphs_reid_short_recipe.yaml --jobs 6 ;;
    many_classes) echo python3 benchmarks/reproduce.py benchmarks/studies/glyphs_10k_short.yaml --jobs 8 ;;
    *) return 1 ;;
    esac
}

stage() {  # stage NAME END_SECOND COMMAND...: run COMMAND until END_SECOND at the latest, then pack
    local name=$1 end=$2
    shift 2
    local left=$((end - SECONDS))
    echo "=== $name: $left s at most (t = $SECONDS s)"
    if ((left > 10)); then
        timeout -k 10 "$left" "$@"
        echo "=== $name: exit $? (t = $SECONDS s)"
    else
        echo "=== $name: skipped, no time left"
    fi
    pack
}

pack() {
    tar -cf "$OUT/results.tar" --ignore-failed-read benchmarks/results/gpu \
        reproduce_output/*/results.* reproduce_output/*/study.json reproduce_output/*/teacher/*_results.json \
        2>/dev/null
}

run() {
    : "${OUT:?the device tool sets OUT}"
    local named
    for named in "${@:-${DEFAULT_STAGES[@]}}"; do  # every stage known and timed, before anything runs
        [[ $named =~ ^[a-z0-9_]+:[0-9]+$ ]] && stage_command "${named%%:*}" >/dev/null ||
            { echo "not STAGE:END_SECOND with a known stage (bench_head bench_step trainer trainer_shared" \
                "trainer_c100 trainer_c100_compiled profile classification reid reid_alpha09 reid_eps05" \
                "many_classes): $named" >&2 && exit 2; }
    done
    exec > >(tee "$OUT/session.log") 2>&1
    local wheels=.device/wheels
    [[ -d $wheels ]] || wheels=.device/wheels-core
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$wheels"/*.whl || exit 1
    export PATH=/tmp/site/bin:$PATH PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1  # /tmp/site/bin: py-spy
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1
    # The carried transformers needs recent regex, tokenizers, ...: where that machine's are older, use its own.
    python3 -c "import transformers" 2>/dev/null || rm -rf /tmp/site/transformers*
    local packed
    for packed in .device/*.tar.xz; do  # whichever tasks the call carried
        [[ -f $packed ]] || continue
        tar -C .device -xJf "$packed" || exit 1
    done
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, timm, transformers, datasets, hf_dis; print('torch', torch.__version__, 'timm', \
timm.__version__, 'transformers', transformers.__version__, 'datasets', datasets.__version__, \
torch.cuda.get_device_name())" || exit 1
    mkdir -p benchmarks/results/gpu
    local study committed
    for study in "${STUDIES[@]}"; do
        committed=benchmarks/results/reproduce_$study.jsonl
        if [[ -f $committed && ! -f reproduce_output/$study/results.jsonl ]]; then
            mkdir -p "reproduce_output/$study" && cp "$committed" "reproduce_output/$study/results.jsonl"
        fi
    done
    local named
    for named in "${@:-${DEFAULT_STAGES[@]}}"; do
        # shellcheck disable=SC2046  # the command's words are meant to split
        stage "${named%%:*}" "${named##*:}" $(stage_command "${named%%:*}")
    done
    for study in "${STUDIES[@]}"; do  # the tables of what finished
        timeout 15 python3 benchmarks/reproduce.py "benchmarks/studies/$study.yaml" --report >/dev/null
    done
    pack
    echo "=== done (t = $SECONDS s)"
}

case "${1:-}" in
prepare) prepare ;;
run) shift && run "$@" ;;
*) echo "usage: $0 prepare | run [STAGE:END_SECOND ...]" >&2 && exit 2 ;;
esac
