#!/usr/bin/env bash
# Issue 5's GPU checks and figures, for a lent GPU machine (docs/benchmarks.md, "GPU"). From the
# repository root there, after benchmarks/device_prep.sh here:
#
#     bash benchmarks/device.sh check bench     # equivalence tests on CUDA, then the benchmark
#     bash benchmarks/device.sh e2e             # cdcgan for 2 epochs, plain and fast, and their evals
#     bash benchmarks/device.sh folder          # issue 27: MNIST as a 64 px RGB folder, model=resnet
#
# (each call under the device's 10-minute limit; no argument runs check, bench and e2e). Files go
# to $OUT: device-<stages>.log (all that is printed), bench-dcgan.json, bench-cdcgan.json,
# eval-plain.json, eval-fast.json, eval-resnet64.json, resnet64-quick-evals.jsonl,
# resnet64-samples.png. Each step has its own time limit, so one that runs long costs only itself.
set -uo pipefail
STAGES=${*:-check bench e2e}
OUT=${OUT:-benchmarks/results/device}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device-${STAGES// /-}.log") 2>&1
export PYTHONUNBUFFERED=1 GANCTL_CACHE=/tmp/ganctl-cache GANCTL_DATA=/tmp/mnist
# A dry run on a CPU shrinks these: BENCH="--batches 32 --steps 2 --warmup 1" E2E=trainer.max_steps=20
BENCH=${BENCH:-"--batches 128,1024 --rounds 2"}
E2E=${E2E:-trainer.epochs=2}
FOLDER=${FOLDER:-trainer.max_steps=3000}  # the folder stage's run length
FAST="trainer.channels_last=true optimizer.fused=true"
FASTEST="trainer.precision=bf16 $FAST trainer.compile=reduce-overhead"
say() { echo; echo "== $1 ($(date +%T))"; }

say setup
if compgen -G ".whl/*.whl" >/dev/null; then  # hydra-core, omegaconf, antlr4: not in the GPU image
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
mkdir -p "$GANCTL_DATA/MNIST/raw"
for f in .mnist/*.gz; do gunzip -c "$f" >"$GANCTL_DATA/MNIST/raw/$(basename "$f" .gz)"; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

if [[ " $STAGES " == *" check "* ]]; then
    say "the fast paths compute what the plain step computes, on CUDA too (CUDA graphs included)"
    timeout 150 python3 -m pytest -q -rs tests/test_fast_paths.py
fi

if [[ " $STAGES " == *" bench "* ]]; then
    say "benchmark against the reference loop, in the same run"
    for model in dcgan cdcgan; do
        timeout 180 python3 benchmarks/bench.py --models $model --losses bce,wgan_gp $BENCH \
            --variant "$FAST" --variant "$FASTEST" --out "$OUT/bench-$model.json"
    done
fi

if [[ " $STAGES " == *" e2e "* ]]; then
    say "end to end: ganctl train model=cdcgan $E2E, plain and fast, then ganctl eval of each"
    timeout 90 ganctl fit-classifier dataset.download=false
    for run in plain fast; do
        extra=""; [ $run = fast ] && extra="$FASTEST"
        start=$EPOCHREALTIME
        timeout 180 ganctl train model=cdcgan $E2E dataset.download=false trainer.progress=false \
            $extra hydra.run.dir=/tmp/e2e-$run
        python3 -c "print('$run: %.1f s from the command to its exit' % ($EPOCHREALTIME - $start))"
        timeout 60 ganctl eval ckpt=/tmp/e2e-$run which=last n=10000 && cp /tmp/e2e-$run/eval.json "$OUT/eval-$run.json"
    done
fi
if [[ " $STAGES " == *" folder "* ]]; then
    say "64 px: a 6,000-image MNIST folder, its data path against the resnet step, then a resnet run and its eval"
    [ -d /tmp/mnist64 ] || timeout 120 python3 benchmarks/mnist_folder.py /tmp/mnist64 --size 64 --n 6000
    timeout 90 python3 benchmarks/data_path.py /tmp/mnist64 --size 64 --batch 64 --steps 20
    start=$EPOCHREALTIME
    timeout 300 ganctl train model=resnet loss=hinge dataset=folder dataset.root=/tmp/mnist64 dataset.img_size=64 \
        trainer.batch_size=64 $FOLDER trainer.progress=false hydra.run.dir=/tmp/resnet64
    python3 -c "print('resnet64: %.1f s from the command to its exit' % ($EPOCHREALTIME - $start))"
    cp /tmp/resnet64/eval.jsonl "$OUT/resnet64-quick-evals.jsonl"
    cp "$(ls -v /tmp/resnet64/samples/*.png | tail -1)" "$OUT/resnet64-samples.png"
    timeout 90 ganctl eval ckpt=/tmp/resnet64 which=last n=3000 && cp /tmp/resnet64/eval.json "$OUT/eval-resnet64.json"
fi

say done
