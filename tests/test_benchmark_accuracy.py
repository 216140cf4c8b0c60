"""Pieces of scripts/benchmark_accuracy.py and its MACE worker: the CPU clock of another process from /proc
against that process's own clock, MACE argument merging, the families it enumerates, and the mlmd config it
writes (a valid config with a snapshot at every mark)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import benchmark_accuracy  # noqa: E402
from _mace_worker import process_tree_cpu_s, stage_one_name  # noqa: E402

from mlmd.training.config import validate_config  # noqa: E402

BURN = """
import sys, time
end = time.process_time() + 0.6
while time.process_time() < end:
    pass
print(time.process_time(), flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_process_cpu_time_from_proc_matches_the_process_own_clock():
    """A child burns 0.6 s of CPU and reports its own CLOCK_PROCESS_CPUTIME_ID; /proc must agree to a few
    clock ticks (it then idles, so its CPU time stands still while we read)."""
    child = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        own = float(child.stdout.readline())
        time.sleep(0.05)
        seen = process_tree_cpu_s(child.pid)
    finally:
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=30)
    assert own >= 0.6
    assert abs(seen - own) < 0.1


def test_mace_arguments_later_values_win_and_flags_append():
    merged = benchmark_accuracy.merge_arguments(["--a", "1", "--amsgrad", "--b", "2"], ["--b", "3", "--c", "--a", "4"])
    assert merged == ["--a", "4", "--amsgrad", "--b", "3", "--c"]
    arguments = benchmark_accuracy.mace_arguments("--num_channels 64")
    for flag in ("--num_channels", "--forces_weight", "--batch_size"):
        assert arguments.count(flag) == 1
    assert arguments[arguments.index("--num_channels") + 1] == "64"
    assert arguments[arguments.index("--forces_weight") + 1] == "100.0"  # MACE's recipe over benchmark_mace's 10
    assert stage_one_name(Path("mace_run-0_epoch-20_swa.pt")) == "mace_run-0_epoch-20.pt"


def test_every_potential_family_and_no_forecaster_gets_a_valid_config(tmp_path):
    import potentials

    families = benchmark_accuracy.potential_families()
    assert "forecaster" in potentials.FAMILIES and "forecaster" not in families
    assert {"equivariant", "facet", "spline", "transformer", "transformer-plain", "transformer-augment",
            "facet-product"} <= set(families)
    for family in families:
        for dataset in ("ethanol", "cuau"):
            config = benchmark_accuracy.mlmd_config(family, dataset, tmp_path / "data.xyz", tmp_path / family,
                                                    [5.0, 20.0], {"lr": 0.002})
            checked = validate_config(config)
            training = checked["training"]
            assert training["snapshot_minutes"] == [5.0, 20.0] and training["max_time_min"] == 20.0
            assert training["budget_clock"] == "cpu" and training["num_threads"] == 1 and training["lr"] == 0.002
            assert training["early_stopping_patience"] is None
            family_name, variant_keys, model_keys = benchmark_accuracy.VARIANTS.get(family, (family, {}, {}))
            assert checked["model"]["family"] == family_name
            assert all(training[key] == value for key, value in variant_keys.items())
            assert all(checked["model"][key] == value for key, value in model_keys.items())
    symmetries = {benchmark_accuracy.mlmd_config(name, "ethanol", tmp_path / "d.xyz", tmp_path / name, [5.0], {})
                  ["training"].get("symmetry", "learned") for name in ("transformer", "transformer-plain",
                                                                      "transformer-augment")}
    assert symmetries == {"learned", "plain", "augment"}
    molecule = benchmark_accuracy.model_section("spline", "ethanol")
    assert molecule["r_min"] < 1.0  # below a C-H bond
