#!/usr/bin/env bash
# Download the wheels bench/gpu_check.sh installs on the lent GPU machine, into .whl/ (git-ignored).
#
# Run it HERE, where the package registries are reachable; the GPU machine has no network.
# That machine's python3 (3.12, /opt/torch/.venv) already has torch 2.11 (CUDA 13), transformers
# 5.17, accelerate 1.15, peft, tokenizers, safetensors, huggingface_hub, numpy, pandas, pyarrow,
# psutil, pyyaml, rich, jinja2, markdown-it-py, pygments, xxhash, fsspec, typing-extensions and more
# (/work/.library/device/KINDS.md lists them). What our pyproject needs beyond that:
#
#   trl, datasets (+ dill, multiprocess), sqlmodel, sqlalchemy, alembic (+ mako), pydantic
#   (+ pydantic-core, annotated-types, typing-inspection), textual (+ mdit-py-plugins,
#   linkify-it-py, platformdirs), and bitsandbytes for QLoRA.
#
# Compiled among them: pydantic-core and sqlalchemy (cp312 manylinux x86_64 wheels), bitsandbytes
# (one py3 manylinux wheel that bundles a library per CUDA version). psutil, pyarrow, xxhash,
# tokenizers and safetensors are compiled too, but the image has them (transformers needs the
# last two). Small pure wheels of a few packages the image has in unknown versions (peft,
# typing-extensions, fsspec) come along, so pip's resolver there can take ours where the image's
# version is out of our range; where it is in range, the image's stays.
#
# transformers: the image's 5.17 is too old for our stages (TrainingArguments(activation_checkpointing=),
# which SFT, reward, DPO, RLOO and GRPO pass, arrived in 5.23; pyproject.toml still says >=5.0), so
# transformers 5.24.0, what CI runs here, comes along (13.5 MB, pure Python; its needs, tokenizers
# 0.23 and huggingface-hub >=1.31, are the image's) and gpu_check.sh asks for >=5.23.
#
# bitsandbytes' wheel is 43 MB, mostly libraries for CUDA 11.8-12.8 and ROCm; torch 2.11 there is
# cu130, so the wheel is repacked with only the CPU, CUDA 13.0 and 13.2 libraries (about 9 MB).
# The device tool carries at most 64 MiB of working tree plus carried folders per call: this
# prints the folder's size at the end.
#
#     bash bench/gpu_wheels.sh            # idempotent: re-downloads nothing already there
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.whl"
mkdir -p "$DEST"
PY="${PYTHON:-python3}"

# Pinned to what the project's tests run here (.venv), all of which accept torch 2.11
# (trl 1.16: transformers>=4.56.2; datasets 5.2: huggingface-hub>=1.31, the image has 1.33).
WHEELS=(
    trl==1.16.0
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
    sqlmodel==0.0.50 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    textual==8.2.8 mdit-py-plugins==0.7.0 linkify-it-py==2.2.0 platformdirs==4.14.9
    peft==0.21.2 typing-extensions==4.16.0 fsspec==2026.9.0
    transformers==5.24.0
    bitsandbytes==0.50.2
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)

have() {  # is a wheel of NAME==VERSION already in .whl? (wheel names use _ for - and may differ in case)
    local name="${1%%==*}" version="${1##*==}"
    compgen -G "$DEST/$(echo "$name" | tr '-' '_')-$version-*.whl" >/dev/null \
        || ls "$DEST" | grep -iq "^$(echo "$name" | tr '-' '_')-$version-"
}

for pin in "${WHEELS[@]}"; do
    if have "$pin"; then continue; fi
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]/#/--platform=}" -d "$DEST" "$pin" 2> >(grep -v "is ignored: it is neither" >&2)
done

# Slim bitsandbytes: keep the libraries torch cu130 can load (and the CPU one bitsandbytes
# imports first); rewrite RECORD without the dropped files so pip installs it cleanly.
"$PY" - "$DEST" <<'EOF'
import sys, zipfile
from pathlib import Path

keep = ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so", "libbitsandbytes_cuda132.so")
for wheel in Path(sys.argv[1]).glob("bitsandbytes-*.whl"):
    with zipfile.ZipFile(wheel) as src:
        names = src.namelist()
        drop = {n for n in names if n.endswith(".so") and not n.endswith(keep)}
        if not drop:
            continue
        slim = wheel.with_suffix(".slim")
        with zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
            for info in src.infolist():
                if info.filename in drop:
                    continue
                data = src.read(info.filename)
                if info.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(l for l in lines if l.split(",", 1)[0] not in drop).encode()
                out.writestr(info, data)
    slim.replace(wheel)
    print(f"{wheel.name}: dropped {len(drop)} libraries for other CUDA/ROCm/XPU versions")
EOF

echo "wheels in $DEST:"
ls -1 "$DEST"
du -sh "$DEST"
echo "total bytes: $(du -sb "$DEST" | cut -f1) (the device call carries at most 64 MiB with the working tree)"
