#!/usr/bin/env bash
# The GPU check (issue #13 item 5): does the project run on one GPU in bf16, and what is its next
# bottleneck, rollouts or training? One command, about 8 minutes on an H200:
#
#   1. install   the project's pure-Python dependencies the GPU machine lacks, from .whl/ (no
#                network there; bench/gpu_wheels.sh downloads them here), and the project itself;
#                transformers too: the image's 5.17 lacks TrainingArguments(activation_checkpointing=)
#                (5.23+), which our SFT, reward and DPO stages pass, so 5.24 (what CI runs) replaces it
#   2. prepare   data, a tokenizer and random-init models of Qwen2.5-0.5B's and GPT-2 small's shapes
#                (bench/gpu_prepare.py); nothing is downloaded
#   3. ppo       PPO with LoRA on the 0.5B shape, 6 updates of 32 prompts x 128-token responses:
#                seconds per update in generation, scoring and training
#   4. generate  the same rollout, 32 x 128 tokens, as plain `generate` (bf16 weights, and fp32
#                under autocast as the stage does), continuous batching (`generate_batch`) and a
#                static cache with torch.compile: tokens/s each (bench/gpu_generate.py)
#   5. pretrain  GPT-2 small (124 M) from scratch, 32 x 1024 tokens per step: tokens/s and MFU
#                (6 x parameters x tokens/s over 989 TFLOP/s, the H200's dense bf16 peak)
#   6. sft_qlora SFT with QLoRA (4-bit base, LoRA r 16) on the 0.5B shape, 30 steps
#   7. demo      `rlhf demo --headless --quick`: the whole loop on the tiny built-in models
#   8. summary   one table (bench/gpu_report.py reads each step's metrics from its workspace)
#
# Each step has a timeout, and all of them share one deadline (--budget, default 470 s), so the
# check ends inside 8 minutes even when a step hangs; a step that would start with too little
# time left is skipped. The training steps run through `rlhf run`, each in its own workspace
# (WORK/ws-STEP), on the stages' default device and precision (cuda, bf16 autocast).
#
# THE DEVICE CALL a session with a GPU makes (after `bash bench/gpu_wheels.sh` here, which fills
# the git-ignored .whl/, about 32 MB; the working tree and .whl together must stay under 64 MiB):
#
#     run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# It writes under $OUT (what comes back, at most 8 files): gpu_check.log (everything printed),
# summary.txt and summary.json (the table and every figure), generate.json, env.txt (GPU,
# versions) and logs.tar.gz (every stage's log). The last thing it prints is the table.
# No GPU was lent in the session that wrote this check: its GPU figures are not measured yet (the CPU
# smoke run below passed, also in a Python 3.12 venv with the GPU machine's torch 2.11 and
# transformers 5.17 and the wheels installed from .whl/).
# A rerun of some steps in the same lease: `bash bench/gpu_check.sh --only ppo,generate`
# (install and prepare run again: each call finds a bare machine).
#
# Without a GPU, `bash bench/gpu_check.sh --cpu-smoke` runs every step at toy sizes on the CPU
# (QLoRA becomes plain LoRA: bitsandbytes' 4 bits need CUDA), in a few minutes, so everything but
# CUDA itself is known to work before device time is spent. Its Python is $PYTHON, else .venv's;
# `--install` also installs .whl/ into it (to rehearse the GPU machine's install in a fresh venv).
#
#     bash bench/gpu_check.sh [--cpu-smoke] [--only STEP,...] [--budget SECONDS] [--work DIR]
#                             [--install | --no-install]
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=gpu
ONLY=""
BUDGET=""
WORK=""
INSTALL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-smoke|--dry-run) MODE=smoke ;;
        --only) ONLY="$2"; shift ;;
        --budget) BUDGET="$2"; shift ;;
        --work) WORK="$2"; shift ;;
        --install) INSTALL=yes ;;
        --no-install) INSTALL=no ;;
        -h|--help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$MODE" = gpu ]; then
    PY="${PYTHON:-python3}"
    SIZE=full
    BUDGET="${BUDGET:-470}"
    WORK="${WORK:-/tmp/rlhf-gpu-check}"
    INSTALL="${INSTALL:-yes}"
else
    if [ -x "$ROOT/.venv/bin/python" ]; then PY="${PYTHON:-$ROOT/.venv/bin/python}"; else PY="${PYTHON:-python3}"; fi
    SIZE=toy
    BUDGET="${BUDGET:-1500}"
    WORK="${WORK:-/tmp/rlhf-gpu-smoke.$$}"
    INSTALL="${INSTALL:-no}"
    # Toy models on a shared CPU: one thread each is fastest and leaves the other cores alone.
    export RLHF_DEVICES=cpu OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
fi
LOGDIR="${OUT:-$ROOT/bench/out/gpu_check}"
mkdir -p "$LOGDIR"
rm -rf "$WORK" && mkdir -p "$WORK"

# Everything printed also goes to $LOGDIR/gpu_check.log (closed and flushed at the end).
exec 3>&1 4>&2
exec > >(tee -a "$LOGDIR/gpu_check.log") 2>&1
TEE_PID=$!

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RLHF_CACHE_DIR="$WORK/cache" RLHF_CANCEL_GRACE=10
RLHF=("$PY" -m console.cli)
START=$(date +%s)
DEADLINE=$((START + BUDGET))
RESERVE=15  # seconds kept back for the summary

wanted() {  # is step $1 among --only (or is there no --only)?
    [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]
}

record() {  # step status seconds
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$WORK/steps.tsv"
}

# run_step NAME CAP CMD...: run CMD with a timeout of CAP seconds or what is left before the
# deadline, whichever is less; record ok / FAILED (rc N) / TIMEOUT / SKIPPED. SIGINT first, so
# `rlhf run` cancels its run (its stage saves and stops), then SIGKILL 30 s later.
run_step() {
    local name="$1" cap="$2"; shift 2
    local now left limit rc begin
    now=$(date +%s)
    left=$((DEADLINE - RESERVE - now))
    limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 20 ]; then
        echo "=== $name: SKIPPED, ${left}s left before the deadline"
        record "$name" "SKIPPED (no time)" 0
        return 1
    fi
    echo "=== $name (timeout ${limit}s; $((now - START))s since the start) $(date -u +%H:%M:%S)"
    begin=$(date +%s)
    timeout --signal=INT --kill-after=30 "$limit" "$@"
    rc=$?
    local seconds=$(($(date +%s) - begin))
    case "$rc" in
        0) record "$name" ok "$seconds" ;;
        124|137) record "$name" TIMEOUT "$seconds" ;;
        *) record "$name" "FAILED (rc $rc)" "$seconds" ;;
    esac
    echo "=== $name: rc $rc after ${seconds}s"
    return "$rc"
}

# A run left behind by a timed-out `rlhf run` (it runs detached) would hold the GPU.
cancel_run() {  # workspace run-name
    timeout 40 "${RLHF[@]}" -w "$1" cancel "$2" || true
}

rlhf_step() {  # name cap spec-or-demo
    local name="$1" cap="$2" what="$3" ws="$WORK/ws-$1" run_name="$1"
    if [ "$what" = demo-quick ]; then
        run_step "$name" "$cap" "${RLHF[@]}" -w "$ws" demo --headless --quick
        run_name=demo-quick
    else
        run_step "$name" "$cap" "${RLHF[@]}" -w "$ws" run "$what"
    fi
    local rc=$?
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && cancel_run "$ws" "$run_name"
    "$PY" "$ROOT/bench/gpu_report.py" --work "$WORK" step "$name" || true
    return "$rc"
}

echo "GPU check ($MODE, $SIZE sizes): python $PY, work $WORK, logs $LOGDIR, budget ${BUDGET}s"

# --- environment -------------------------------------------------------------------------------
{
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
        --format=csv
    "$PY" - <<'EOF'
import importlib.metadata as md, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ["torch", "transformers", "accelerate", "peft", "trl", "datasets", "tokenizers", "safetensors",
             "huggingface-hub", "bitsandbytes", "pydantic", "sqlmodel", "sqlalchemy", "alembic", "textual",
             "numpy", "pandas", "pyarrow", "fsspec", "typing-extensions", "setuptools", "triton"]:
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} -")
EOF
} >"$LOGDIR/env.txt" 2>&1
cat "$LOGDIR/env.txt"

if [ "$MODE" = gpu ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: torch sees no CUDA GPU here; on a machine without one run: bash bench/gpu_check.sh --cpu-smoke"
    exit 2
fi

# --- 1. install --------------------------------------------------------------------------------
install() {
    if [ ! -d "$ROOT/.whl" ] || [ -z "$(ls "$ROOT/.whl"/*.whl 2>/dev/null)" ]; then
        echo "no wheels in $ROOT/.whl: run bench/gpu_wheels.sh where a registry is reachable, and carry .whl"
        return 1
    fi
    # The project's dependencies from pyproject.toml, but not its torch pin (the machine's torch
    # stays), plus bitsandbytes for QLoRA. pip's resolver keeps each installed package whose
    # version is in range and takes the rest from .whl/.
    "$PY" - "$ROOT/pyproject.toml" >"$WORK/requirements.txt" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(d for d in project["dependencies"] if not d.replace(" ", "").startswith("torch")))
print("bitsandbytes")
# Our stages pass TrainingArguments(activation_checkpointing=), new in transformers 5.23; the
# image has 5.17, so the carried 5.24 replaces it (pyproject.toml's >=5.0 is too loose).
print("transformers>=5.23")
EOF
    local pip=("$PY" -m pip install -q --no-index --find-links "$ROOT/.whl" --no-cache-dir --no-compile
               --disable-pip-version-check)
    if ! "${pip[@]}" -r "$WORK/requirements.txt"; then
        # A version conflict with the image (a package there out of our range that .whl has no
        # wheel for): install every carried wheel as it is, without the resolver, and go on.
        echo "install: the resolver failed (above); installing .whl/*.whl with --no-deps instead"
        "${pip[@]}" --no-deps "$ROOT"/.whl/*.whl || return 1
    fi
    # The project itself, without its dependencies (its torch pin would ask for torch 2.13). A
    # failure costs nothing: PYTHONPATH already has the project, and rlhf runs as python -m console.cli.
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --disable-pip-version-check -e "$ROOT" \
        >"$WORK/editable-install.log" 2>&1 \
        || { cat "$WORK/editable-install.log"; echo "install: editable install failed; using PYTHONPATH=$ROOT"; }
    local modules="trl, datasets, sqlmodel, alembic, pydantic, textual, peft, accelerate, transformers, engine, store"
    [ "$MODE" = gpu ] && modules="$modules, bitsandbytes"
    "$PY" -c "import $modules; print('install: imports ok (torch', __import__('torch').__version__, ')')"
}

if [ "$INSTALL" = yes ]; then
    export -f install
    export PY ROOT WORK MODE
    run_step install 120 bash -c install || echo "install failed: the steps below will show what is missing"
fi

# --- 2. prepare, then the steps ---------------------------------------------------------------
PREP="$WORK/prep"
prepared=no
if wanted ppo || wanted generate || wanted pretrain || wanted sft_qlora || { wanted demo && [ "$MODE" = smoke ]; }; then
    run_step prepare 150 "$PY" "$ROOT/bench/gpu_prepare.py" --out "$PREP" --size "$SIZE" && prepared=yes
fi

needs_prep() {  # step: is it wanted, and is what it trains on there?
    wanted "$1" || return 1
    [ "$prepared" = yes ] && return 0
    record "$1" "SKIPPED (prepare)" 0
    return 1
}

if needs_prep ppo; then
    rlhf_step ppo 180 "$PREP/ppo.toml"
fi

if needs_prep generate; then
    if [ "$MODE" = gpu ]; then
        gen_args=(--batch-sizes "${GPU_CHECK_BATCHES:-32}" --new-tokens 128 --repeats 2 --compile-only-first-batch)
    else
        gen_args=(--batch-sizes 4 --new-tokens 8 --repeats 1 --device cpu --compile-backend eager
                  --no-cb-warmup --cb-num-blocks 8)
    fi
    run_step generate 180 "$PY" "$ROOT/bench/gpu_generate.py" --model "$PREP/qwen-0.5b" "${gen_args[@]}" \
        --json "$WORK/generate.json"
    "$PY" "$ROOT/bench/gpu_report.py" --work "$WORK" step generate || true
fi

if needs_prep pretrain; then
    rlhf_step pretrain 120 "$PREP/pretrain.toml"
fi

if needs_prep sft_qlora; then
    rlhf_step sft_qlora 150 "$PREP/sft_qlora.toml"
fi

if [ "$MODE" = gpu ] && wanted demo; then
    rlhf_step demo 300 demo-quick
elif needs_prep demo; then
    # The quick demo's stages, each cut to a few steps (prep/demo.toml): the same kinds and wiring.
    rlhf_step demo 600 "$PREP/demo.toml"
fi

# --- 8. summary --------------------------------------------------------------------------------
[ -f "$WORK/generate.json" ] && cp "$WORK/generate.json" "$LOGDIR/generate.json"
(cd "$WORK" && find . -name '*.log' -not -path '*/checkpoint-*' | tar czf "$LOGDIR/logs.tar.gz" -T -) 2>/dev/null || true
echo
echo "GPU check ($MODE) finished in $(($(date +%s) - START))s; work folder $WORK; logs in $LOGDIR"
if [ "$MODE" = gpu ]; then
    echo "MFU: 6 x parameters x tokens/s over 989 TFLOP/s (H200 SXM dense bf16, datasheet); also shown against"
    echo "the ~790 TFLOP/s a bf16 matmul reached on these machines (KINDS.md)."
else
    echo "CPU smoke run: toy sizes, figures are not measurements (QLoRA ran as plain LoRA: 4 bits need CUDA)."
fi
"$PY" "$ROOT/bench/gpu_report.py" --work "$WORK" --json "$LOGDIR/summary.json" summary | tee "$LOGDIR/summary.txt"
failed=$(grep -cv $'\tok\t' "$WORK/steps.tsv" 2>/dev/null)

exec 1>&3 2>&4 3>&- 4>&-
wait "$TEE_PID" 2>/dev/null || true
[ "${failed:-0}" -eq 0 ]
