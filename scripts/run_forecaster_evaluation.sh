#!/usr/bin/env bash
# The forecaster evaluation of issue 7, end to end: reference MD, training, export, evaluation, on
# ethanol (GFN2-xTB), copper (EMT, 108-atom fcc solid) and liquid argon (Lennard-Jones).
#
#   scripts/run_forecaster_evaluation.sh                        # everything except the ablation
#   SYSTEMS="argon" STAGES="evaluate" scripts/run_forecaster_evaluation.sh
#   STAGES=ablation scripts/run_forecaster_evaluation.sh       # ethanol: time reversal / rollout loss (needs ethanol/ref)
#
# Measured stage by stage on a 2-core machine shared with two other jobs: generate 9 min, train 33 min,
# evaluate 19 min, tight 12 min (about 73 min in all); the ablation adds about 21 min.
#
# Writes under $OUT (default out/forecaster): SYSTEM/ref/run-00k.h5 (reference MD; runs 0-2 train, run 3
# validates and is the held-out run of the one-step errors), SYSTEM/train/ (checkpoints, metrics),
# SYSTEM/forecaster.pt and SYSTEM/evaluation.json (+ evaluation.log with the printed table).
# Every heavy process runs on one torch/OpenMP thread (shared machines; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/forecaster}
SYSTEMS=${SYSTEMS:-"ethanol cu argon"}
STAGES=${STAGES:-"generate train export evaluate tight"}
STABILITY_MINUTES=${STABILITY_MINUTES:-8}
TIGHT_STABILITY_MINUTES=${TIGHT_STABILITY_MINUTES:-4}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PYTHON=${PYTHON:-python}

has() { [[ " $STAGES " == *" $1 "* ]]; }

generate() {  # reference MD: 4 independent CSVR runs (tau 1 ps), positions and velocities every step
    case $1 in
    ethanol)  # 9 atoms in vacuum, GFN2-xTB (tblite), 300 K, 0.5 fs; 3 ps equilibration, 4 ps recorded per run
        mlmd generate ethanol --trajectory --runs 4 --steps 8000 --timestep 0.5 --temperature 300 \
            --equilibration 6000 --seed 0 -o "$OUT/ethanol/ref" --quiet ;;
    cu)  # 108-atom fcc bulk (3x3x3 cubic cells, periodic), EMT, 800 K (solid), 2 fs; 4 ps equilibration, 5 ps recorded
        mlmd generate cu --trajectory --config bulk-large --runs 4 --steps 2500 --timestep 2 --temperature 800 \
            --equilibration 2000 --seed 0 -o "$OUT/cu/ref" --quiet ;;
    argon)  # 108 atoms at 1.374 g/cm3 (0.0207 /A^3), LJ (sigma 3.405 A, eps 10.3 meV), 120 K: liquid
            # (T* = 1.0, rho* = 0.82), melted from fcc during 10 ps of equilibration; 5 fs; 20 ps recorded
        mlmd generate argon --trajectory --runs 4 --steps 4000 --timestep 5 --temperature 120 \
            --equilibration 2000 --seed 0 -o "$OUT/argon/ref" --quiet ;;
    esac
}

for system in $SYSTEMS; do
    mkdir -p "$OUT/$system"
    if has generate; then
        echo "== $system: reference MD"
        ( time generate "$system" ) 2>&1 | tee "$OUT/$system/generate.log"
    fi
    if has train; then
        echo "== $system: training (scripts/forecaster_eval_$system.toml, 10 min budget)"
        rm -rf "$OUT/$system/train"
        ( time mlmd train "scripts/forecaster_eval_$system.toml" --quiet ) 2>&1 | tee "$OUT/$system/train.log"
    fi
    if has export; then
        mlmd export "$OUT/$system/train/best.pt" -o "$OUT/$system/forecaster.pt"
    fi
    case $system in
    ethanol) extra=(--vacf-window 500fs --msd-window 1ps) ;;
    cu) extra=(--vacf-window 1ps --msd-window 2ps) ;;
    argon) extra=(--vacf-window 2ps --msd-window 5ps) ;;
    esac
    if has evaluate; then
        echo "== $system: evaluation"
        ( time $PYTHON scripts/evaluate_forecaster.py "$OUT/$system/ref" --held-out "$OUT/$system/ref/run-003.h5" \
            --model "$OUT/$system/forecaster.pt" --equivariant-like --threads 1 \
            --stability-replicas 8 --stability-steps 100000 --stability-minutes "$STABILITY_MINUTES" \
            --speed-steps 300 --md-steps 300 "${extra[@]}" --json "$OUT/$system/evaluation.json" ) \
            2>&1 | tee "$OUT/$system/evaluation.log"
    fi
    if has tight; then  # the same evaluation with a 10x tighter CSVR coupling in the rollout (tau 100 fs)
        echo "== $system: evaluation, CSVR tau 100 fs"
        ( time $PYTHON scripts/evaluate_forecaster.py "$OUT/$system/ref" --held-out "$OUT/$system/ref/run-003.h5" \
            --model "$OUT/$system/forecaster.pt" --tau 100fs --threads 1 \
            --stability-replicas 8 --stability-steps 100000 --stability-minutes "$TIGHT_STABILITY_MINUTES" \
            --speed-steps 50 --md-steps 0 "${extra[@]}" --json "$OUT/$system/evaluation-tau100fs.json" ) \
            2>&1 | tee "$OUT/$system/evaluation-tau100fs.log"
    fi
done

# Ablation (ABLATION_SYSTEM, default ethanol; another system needs its own configs): three short
# trainings that differ in one key each, scripts/forecaster_ablation_SYSTEM_{tr,norev,rollout3}.toml
# (time reversal on / off, rollout loss over 3 calls with time reversal on), each evaluated with the
# same short settings (no MD timing).
ABLATION_SYSTEM=${ABLATION_SYSTEM:-ethanol}
if has ablation; then
    for variant in ${ABLATIONS:-tr norev rollout3}; do
        dir="$OUT/ablation-$ABLATION_SYSTEM/$variant"
        mkdir -p "$dir"
        rm -rf "$dir/train"
        ( time mlmd train "scripts/forecaster_ablation_${ABLATION_SYSTEM}_$variant.toml" --quiet ) 2>&1 | tee "$dir/train.log"
        mlmd export "$dir/train/best.pt" -o "$dir/forecaster.pt"
        $PYTHON scripts/evaluate_forecaster.py "$OUT/$ABLATION_SYSTEM/ref" --held-out "$OUT/$ABLATION_SYSTEM/ref/run-003.h5" \
            --model "$dir/forecaster.pt" --threads 1 --stability-replicas 8 --stability-steps 100000 \
            --stability-minutes 2 --speed-steps 50 --md-steps 0 --json "$dir/evaluation.json" 2>&1 | tee "$dir/evaluation.log"
    done
fi
