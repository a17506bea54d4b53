"""benchmarks/bench.py runs end to end on tiny data and writes what it claims (speed itself is
never asserted: the figures come from real runs, see docs/benchmarks.md)."""
import json

import torch

from conftest import load_script


def test_bench_writes_a_row_per_model_loss_batch_and_variant(data_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    load_script("bench").main(["--data", str(data_root), "--device", "cpu", "--models", "cdcgan",
                               "--losses", "bce,wgan_gp", "--batches", "4", "--steps", "1", "--warmup", "1",
                               "--rounds", "2", "--matmul-size", "64", "--variant", "trainer.channels_last=true",
                               "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["device"].startswith("CPU") and result["torch"] and result["command"].startswith("python ")
    rows = result["rows"]
    assert [(r["loss"], r["variant"]) for r in rows] == [
        ("bce", ""), ("bce", "trainer.channels_last=true"), ("wgan_gp", ""), ("wgan_gp", "trainer.channels_last=true")]
    for r in rows:
        images = 4 * (5 if r["loss"] == "wgan_gp" else 1)  # real images per step: n_critic batches
        assert abs(r["ganctl_img_per_s"] * r["ganctl_ms_per_step"] / 1e3 - images) < 1e-6 * images
        assert abs(r["speedup"] - r["reference_ms_per_step"] / r["ganctl_ms_per_step"]) < 1e-9
        assert len(r["rounds_ms"]["ganctl"]) == len(r["rounds_ms"]["reference"]) == 2
        flops_per_s = r["flops_per_step"] / (r["ganctl_ms_per_step"] / 1e3)
        assert abs(r["ganctl_tflops"] * 1e12 - flops_per_s) < 1e-6 * flops_per_s
        assert abs(r["peak_fraction"] - r["ganctl_tflops"] / result["matmul_peak_tflops"]["float32"]) < 1e-9
    # Five critic updates, each with the penalty's extra forward and double backward, against one
    # (the generator's share, one update in both, keeps the ratio under 5 for this G-heavy model).
    assert rows[2]["flops_per_step"] > 3 * rows[0]["flops_per_step"]
    assert rows[1]["flops_per_step"] == rows[0]["flops_per_step"]  # a layout computes the same
    assert rows[1]["rounds_ms"]["reference"] == rows[0]["rounds_ms"]["reference"]  # one reference for both
    assert "| cdcgan | wgan_gp | 4 |" in capsys.readouterr().out


def test_a_variant_that_fails_is_reported_and_the_other_rows_still_measured(data_root, tmp_path, monkeypatch, capsys):
    """A compiled step can break inside torch (inductor's stride check on CUDA, docs/benchmarks.md):
    that row says why, and the model's other rows are still timed and written."""
    bench, out = load_script("bench"), tmp_path / "bench.json"
    real_step = bench.ganctl_step

    def breaks_at_seed_7(cfg, device, data):
        run, n_critic = real_step(cfg, device, data)
        if cfg.trainer.seed != 7:
            return run, n_critic

        def broken():
            raise AssertionError("expected size 16==16, stride 196==1 at dim=1\nError in op: convolution_backward")
        return broken, n_critic
    monkeypatch.setattr(bench, "ganctl_step", breaks_at_seed_7)
    bench.main(["--data", str(data_root), "--device", "cpu", "--models", "gan", "--losses", "bce", "--batches", "8",
                "--steps", "1", "--warmup", "1", "--rounds", "2", "--matmul-size", "64",
                "--variant", "trainer.seed=7", "--variant", "trainer.channels_last=true", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["", "trainer.seed=7", "trainer.channels_last=true"]
    assert rows[1] == {"model": "gan", "loss": "bce", "batch": 8, "variant": "trainer.seed=7",
                       "error": "AssertionError: expected size 16==16, stride 196==1 at dim=1"}
    assert rows[0]["ganctl_ms_per_step"] > 0 and len(rows[2]["rounds_ms"]["ganctl"]) == 2
    printed = capsys.readouterr().out
    assert "| gan | bce | 8 | trainer.seed=7 | failed: AssertionError: expected size 16==16" in printed


def test_a_time_budget_times_fewer_steps_where_steps_are_slow(data_root, tmp_path):
    bench, out = load_script("bench"), tmp_path / "bench.json"
    common = ["--data", str(data_root), "--device", "cpu", "--models", "gan", "--losses", "bce", "--batches", "16",
              "--steps", "5", "--warmup", "1", "--rounds", "1", "--matmul-size", "64", "--out", str(out)]
    bench.main(common)
    assert json.loads(out.read_text())["rows"][0]["steps_timed"] == {"ganctl": 5, "reference": 5}
    bench.main([*common, "--round-s", "1e-9"])  # any step is slower than that: the fewest, 3
    assert json.loads(out.read_text())["rows"][0]["steps_timed"] == {"ganctl": 3, "reference": 3}


def test_flops_of_a_step_count_both_updates_forward_and_backward(make_cfg, data_root):
    """One BCE step of an MLP GAN z(3) -> 8 -> 784 against 784 -> 4 -> 1 (no norm, no dropout),
    batch B, counted by hand in multiply-adds x 2 (bias and activations are not counted):
    D update: G forward; D on real and on fake, forward and the weight gradients, and the input
    gradient of D's second layer only (neither real nor the detached fake needs one).
    G update: D on fake forward and both of D's input gradients (its weights are frozen); G's
    weight gradients and its second layer's input gradient (z needs none)."""
    from ganctl.data import load_mnist
    B, z, h, P, d = 16, 3, 8, 784, 4
    cfg = make_cfg("model=gan", "loss=bce", "model.z_dim=3", "model.G.hidden=[8]", "model.G.norm=none",
                   "model.D.hidden=[4]", "model.D.dropout=0", "trainer.ema_decay=0")
    G = 2 * B * (z * h + h * P)      # G forward; its weight gradients cost the same
    D = 2 * B * (P * d + d * 1)      # D forward on one batch; its weight gradients cost the same
    d_update = G + 2 * D + 2 * D + 2 * (2 * B * d)
    g_update = D + (2 * B * d + 2 * B * P * d) + G + 2 * B * h * P
    data = load_mnist(str(data_root), download=False, split="train", device=torch.device("cpu"))
    assert load_script("bench").step_flops(cfg, torch.device("cpu"), data) == d_update + g_update


def test_quality_keeps_rows_another_invocation_wrote_and_tables_each_budget_apart(tmp_path, monkeypatch, capsys):
    quality = load_script("quality")
    out = tmp_path / "q.json"
    out.write_text(json.dumps({"machine": "m", "rows": []}))
    fake = dict(fid=2.0, fid_floor=0.1, fid_ratio=20.0, intra_fid=None, label_acc=None, label_tv=0.1,
                precision=0.5, recall=0.5, train_s=60.0)

    def run_pair(runs, model, loss, seed, steps, n, sets):
        # meanwhile another invocation (another pair, other steps) finished and wrote its row
        saved = json.loads(out.read_text())
        saved["rows"].append({"model": "dcgan", "loss": "bce", "seed": 0, "steps": 187, "set": "augment=ada", **fake})
        out.write_text(json.dumps(saved))
        return {"model": model, "loss": loss, "seed": seed, "steps": steps, "set": " ".join(sets), **fake, "fid": 3.0}

    monkeypatch.setattr(quality, "run_pair", run_pair)
    quality.main(["--pairs", "dcgan:bce", "--steps", "936", "--runs", str(tmp_path), "--out", str(out),
                  "--set", "augment=ada"])
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["steps"], r["fid"]) for r in rows) == [(187, 2.0), (936, 3.0)]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| dcgan")]
    assert [line.split(" | ")[2:5] for line in lines] == [["187", "0", "2"], ["936", "0", "3"]]
