#!/usr/bin/env bash
# #23's benchmark run (2026-12-02): searches as a user runs them, each verdict re-measured side by
# side with TensorFlow's defaults, each adopted file's deviation re-checked independently.
set -u
cd . && . .venv/bin/activate
OUT=results/compute-2026-12-02
mkdir -p $OUT
R="--seeds 1 --rounds 4 --seconds 4 --warmup 5"
date -u +"start %FT%TZ load %s" ; uptime
python benchmarks/repro.py configs/encoder.yaml $R --search-arg=--budget --search-arg=6m --out $OUT/encoder-none > $OUT/encoder-none.txt 2>&1
python benchmarks/repro.py configs/encoder.yaml $R --search-arg=--budget --search-arg=6m --search-arg=--accuracy-tolerance --search-arg=0.05 --tag -tol --out $OUT/encoder-tol > $OUT/encoder-tol.txt 2>&1
python benchmarks/repro.py configs/quickstart.yaml $R --out $OUT/quickstart-none > $OUT/quickstart-none.txt 2>&1
python benchmarks/repro.py configs/quickstart.yaml $R --search-arg=--accuracy-tolerance --search-arg=0.05 --tag -tol --out $OUT/quickstart-tol > $OUT/quickstart-tol.txt 2>&1
# a model file: the encoder saved as .keras, searched with no config
python -c "import sys; sys.path.insert(0, 'configs'); import encoder; encoder.build_model().save('$OUT/encoder.keras')" > $OUT/save.txt 2>&1
( t0=$(date +%s); python -m tuner search --model $OUT/encoder.keras --batch-size 8 --accuracy-tolerance 0.05 --budget 5m --seed 1 --output $OUT/modelfile-tol/tuned.yaml > $OUT/modelfile-tol.txt 2>&1; echo "wall $(( $(date +%s) - t0 )) s rc $?" >> $OUT/modelfile-tol.txt )
python benchmarks/remeasure.py $OUT/modelfile-tol/tuned.yaml --rounds 4 --seconds 4 --warmup 5 --json $OUT/modelfile-tol-remeasure.json > $OUT/modelfile-tol-remeasure.txt 2>&1
python benchmarks/repro.py configs/branchy.yaml $R --out $OUT/branchy-none > $OUT/branchy-none.txt 2>&1
python benchmarks/repro.py configs/sequential_map.yaml $R --out $OUT/seqmap-none > $OUT/seqmap-none.txt 2>&1
for f in $OUT/*/*/tuned.yaml $OUT/modelfile-tol/tuned.yaml; do
  [ -f "$f" ] || continue
  n=$(echo $f | tr '/' '_')
  python benchmarks/accuracy_check.py "$f" --json $OUT/acc-$n.json > /dev/null 2>$OUT/acc-$n.err; echo "$f rc=$?" >> $OUT/accuracy.txt
done
date -u +"end %FT%TZ"; uptime
