#!/usr/bin/env bash
# Run here (with a network), before benchmarks/device.sh runs on a lent GPU machine: puts what that
# machine lacks into two ignored folders for the device tool to carry. .whl: wheels of the
# hydra-core, omegaconf and antlr4 versions installed here (pure Python; antlr4 4.9.3 is published
# as a source archive only, so it is built). .mnist: the real MNIST IDX files, gzipped (11 MB).
set -euo pipefail
rm -rf .whl .mnist
mkdir -p .whl .mnist
version() { python3 -c "from importlib.metadata import version; print(version('$1'))"; }
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl \
    "hydra-core==$(version hydra-core)" "omegaconf==$(version omegaconf)"
python3 -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
for f in "${GANCTL_DATA:-../shared/data}"/MNIST/raw/*-ubyte; do
    gzip -c "$f" >".mnist/$(basename "$f").gz"
done
ls -l .whl .mnist
