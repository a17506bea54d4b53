"""benchmarks/bench.py runs end to end on tiny data and writes what it claims (speed itself is
never asserted: the figures come from real runs, see docs/benchmarks.md)."""
import importlib.util
import json

from conftest import REPO


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", REPO / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_writes_a_row_per_model_loss_batch_and_variant(data_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    load_bench().main(["--data", str(data_root), "--device", "cpu", "--models", "cdcgan", "--losses", "bce,wgan_gp",
                       "--batches", "16", "--steps", "1", "--warmup", "1", "--rounds", "2",
                       "--variant", "trainer.channels_last=true", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["device"].startswith("CPU") and result["torch"] and result["command"].startswith("python ")
    rows = result["rows"]
    assert [(r["loss"], r["variant"]) for r in rows] == [
        ("bce", ""), ("bce", "trainer.channels_last=true"), ("wgan_gp", ""), ("wgan_gp", "trainer.channels_last=true")]
    for r in rows:
        images = 16 * (5 if r["loss"] == "wgan_gp" else 1)  # real images per step: n_critic batches
        assert abs(r["ganctl_img_per_s"] * r["ganctl_ms_per_step"] / 1e3 - images) < 1e-6 * images
        assert abs(r["speedup"] - r["reference_ms_per_step"] / r["ganctl_ms_per_step"]) < 1e-9
        assert len(r["rounds_ms"]["ganctl"]) == len(r["rounds_ms"]["reference"]) == 2
    assert "| cdcgan | wgan_gp | 16 |" in capsys.readouterr().out
