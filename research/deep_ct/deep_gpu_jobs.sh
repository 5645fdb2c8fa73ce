#!/bin/bash
# Several deep_mnist.py runs side by side on one GPU, one process per (seed, method), then their results
# merged into one work directory and RESULTS-deep.md rewritten from it.  How the numbers in
# benchmarks/RESULTS-deep.md for seeds 2-4 were produced (on one H100, 3 to 8 processes at a time).
#
#   benchmarks/deep_gpu_jobs.sh 2:CT 3:CT 4:CT 2:DCN 2:DKM          # seed:method ...
#
# A seed's pretrained autoencoder is shared by all its methods: pretrain first (a job "S:AEKM" pretrains
# seed S and records AEKM), or put ae_seedS.pt in $WORKDIR.  Environment: PYTHON (default python3),
# WORKDIR (default benchmarks/out/deep), RESULTS (default benchmarks/RESULTS-deep.md), TLIM (seconds per job,
# default none), DEVICE (default cuda), EXTRA (more deep_mnist.py arguments, e.g. "--limit 2000").
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
W=${WORKDIR:-benchmarks/out/deep}
mkdir -p "$W"
for job in "$@"; do
  s=${job%%:*}; m=${job#*:}
  d=$W/jobs/s$s-$m; mkdir -p "$d"
  [ -f "$W/ae_seed$s.pt" ] && cp -n "$W/ae_seed$s.pt" "$d/"
  ${TLIM:+timeout $TLIM} $PY benchmarks/deep_mnist.py --device "${DEVICE:-cuda}" --seeds "$s" --methods "$m" \
      --workdir "$d" --results "$d/RESULTS.md" ${EXTRA:-} > "$d/log.txt" 2>&1 &
done
wait
for d in "$W"/jobs/*/; do
  cp -n "$d"/ae_seed*.pt "$d"/pretrain_*.json "$d"/run_*.json "$d"/result_*.npz "$W"/ 2>/dev/null
  mkdir -p "$W/plots"; cp -n "$d"/plots/*.png "$W/plots/" 2>/dev/null
  grep -h "done:" "$d/log.txt"
done
$PY - "$W" "${RESULTS:-benchmarks/RESULTS-deep.md}" <<'PY'
import argparse, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
import deep_mnist
deep_mnist.write_results(Path(sys.argv[1]), Path(sys.argv[2]),
                         argparse.Namespace(batch_size=256, pretrain_epochs=50, finetune_epochs=100, limit=None,
                                            threads=1, include=[]))
PY
