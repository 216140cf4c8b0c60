#!/usr/bin/env bash
# The forecaster evaluation (issues 7 and 14), end to end: reference MD, training, export, evaluation, on
# ethanol (GFN2-xTB), copper (EMT, 108-atom fcc solid), liquid argon (Lennard-Jones) and liquid aluminium
# (al: EMT, 108 atoms, 1000 K; a system the recipe was never tuned on). Each system trains a deterministic and
# a stochastic forecaster with the same recipe (scripts/forecaster_eval_SYSTEM.toml; the stochastic one adds
# model.stochastic = true) and evaluates five modes: deterministic, deterministic-energy (the energy-aware
# step with the reference potential as U), stochastic (velocities sampled), stochastic-joint (displacement and
# velocities sampled), stochastic-mean, stochastic-energy (velocities sampled, energy-aware).
#
#   scripts/run_forecaster_evaluation.sh                        # everything except the ablation
#   SYSTEMS="argon" STAGES="evaluate" scripts/run_forecaster_evaluation.sh
#   SYSTEMS=al MODES="stochastic stochastic-energy" STAGES=evaluate scripts/run_forecaster_evaluation.sh
#   TRAIN_MINUTES=5 SYSTEMS=cu scripts/run_forecaster_evaluation.sh   # 5 CPU-minutes per training instead
#   STAGES=ablation scripts/run_forecaster_evaluation.sh       # ethanol: time reversal / rollout loss (needs ethanol/ref)
#
# Writes under $OUT (default out/forecaster): SYSTEM/ref/run-00k.h5 (reference MD; runs 0-2 train, run 3
# validates and is the held-out run of the one-step errors), SYSTEM/{deterministic,stochastic}/ (config.json,
# train/, forecaster.pt, train.log) and SYSTEM/evaluation-MODE.{json,log} (the printed table).
# Every heavy process runs on one torch/OpenMP thread (shared machines; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/forecaster}
SYSTEMS=${SYSTEMS:-"ethanol cu argon al"}
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
    al)  # 108 Al atoms at the fcc density (3x3x3 cubic cells), EMT, 1000 K, 2 fs; started disordered (0.6 A
         # Gaussian displacements), which releases so much potential energy that with tau 1 ps the runs cool
         # from ~2000 K to ~1100 K over the first 9 ps (measured with --equilibration 2000: recorded mean
         # 1415 K); hence 20 ps of equilibration. Liquid: D of the reference runs 7.0e-5 cm2/s (evaluation.json,
         # the 2000-step variant), an fcc solid's is ~0. 5 ps recorded
        mlmd generate al-liquid --trajectory --runs 4 --steps 2500 --timestep 2 --temperature 1000 \
            --equilibration 10000 --seed 0 -o "$OUT/al/ref" --quiet ;;
    esac
}

# The reference potential of each system: the energy-aware step's U.
reference_calculator() {
    case $1 in ethanol) echo gfn2 ;; cu|al) echo emt ;; argon) echo lj ;; esac
}

# A training config from scripts/forecaster_eval_SYSTEM.toml with data and output under $OUT and, for the
# stochastic variant, model.stochastic = true (otherwise the same recipe).
write_config() {  # system variant -> prints the JSON config's path
    $PYTHON - "$1" "$2" "$OUT" <<'PY'
import json, os, pathlib, sys, tomllib
system, variant, out = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]).resolve()
config = tomllib.loads(pathlib.Path(f"scripts/forecaster_eval_{system}.toml").read_text())
config["data"]["path"] = str(out / system / "ref")
config["output"]["directory"] = str(out / system / variant / "train")
config["model"]["stochastic"] = variant == "stochastic"
if os.environ.get("TRAIN_MINUTES"):  # a shorter (or longer) budget than the recipe's, e.g. on a busy machine
    config["training"]["max_time_min"] = float(os.environ["TRAIN_MINUTES"])
path = out / system / variant / "config.json"
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(config, indent=1))
print(path)
PY
}

VARIANTS=${VARIANTS:-"deterministic stochastic"}
for system in $SYSTEMS; do
    mkdir -p "$OUT/$system"
    if has generate; then
        echo "== $system: reference MD"
        ( time generate "$system" ) 2>&1 | tee "$OUT/$system/generate.log"
    fi
    for variant in $VARIANTS; do
        dir="$OUT/$system/$variant"
        if has train; then
            echo "== $system: training, $variant (scripts/forecaster_eval_$system.toml)"
            config=$(write_config "$system" "$variant")
            rm -rf "$dir/train"
            ( time mlmd train "$config" --quiet ) 2>&1 | tee "$dir/train.log"
        fi
        if has export; then
            mlmd export "$dir/train/best.pt" -o "$dir/forecaster.pt"
        fi
    done
    case $system in
    ethanol) extra=(--vacf-window 500fs --msd-window 1ps) ;;
    cu) extra=(--vacf-window 1ps --msd-window 2ps) ;;
    argon) extra=(--vacf-window 2ps --msd-window 5ps) ;;
    al) extra=(--vacf-window 1ps --msd-window 2ps) ;;
    esac
    # Modes: the deterministic forecaster, alone and energy-aware (U = the reference potential); the
    # stochastic one sampled, on its mean, and sampled + energy-aware. Only `deterministic` times MD.
    energy=(--energy-calculator "$(reference_calculator "$system")")
    for mode in ${MODES:-deterministic deterministic-energy stochastic stochastic-joint stochastic-mean stochastic-energy}; do
        has evaluate || break
        case $mode in
        deterministic) model=deterministic; options=(--equivariant-like --md-steps 300 --speed-steps 300) ;;
        deterministic-energy) model=deterministic; options=("${energy[@]}" --md-steps 0 --speed-steps 100) ;;
        stochastic) model=stochastic; options=(--sample --md-steps 0 --speed-steps 100) ;;
        stochastic-joint) model=stochastic; options=(--sample --sample-displacement --md-steps 0 --speed-steps 100) ;;
        stochastic-mean) model=stochastic; options=(--mean --md-steps 0 --speed-steps 100) ;;
        stochastic-energy) model=stochastic; options=(--sample "${energy[@]}" --md-steps 0 --speed-steps 100) ;;
        esac
        echo "== $system: evaluation, $mode"
        ( time $PYTHON scripts/evaluate_forecaster.py "$OUT/$system/ref" --held-out "$OUT/$system/ref/run-003.h5" \
            --model "$OUT/$system/$model/forecaster.pt" "${options[@]}" --threads 1 \
            --stability-replicas 8 --stability-steps 100000 --stability-minutes "$STABILITY_MINUTES" \
            "${extra[@]}" --json "$OUT/$system/evaluation-$mode.json" ) 2>&1 | tee "$OUT/$system/evaluation-$mode.log"
    done
    if has tight; then  # the deterministic evaluation with a 10x tighter CSVR coupling in the rollout (tau 100 fs)
        echo "== $system: evaluation, CSVR tau 100 fs"
        ( time $PYTHON scripts/evaluate_forecaster.py "$OUT/$system/ref" --held-out "$OUT/$system/ref/run-003.h5" \
            --model "$OUT/$system/deterministic/forecaster.pt" --tau 100fs --threads 1 \
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
