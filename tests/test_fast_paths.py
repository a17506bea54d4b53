"""The speed switches compute what the plain step computes: the same losses over a few steps on
fixed batches, within a tolerance (fp32 switches tight, bf16 loose). Speed itself is measured by
benchmarks/bench.py, never asserted here. Each check runs on the CPU and, where there is one, on
a CUDA device too (CI has none: there the CUDA cases are skipped), where trainer.compile also
means CUDA graphs (reduce-overhead)."""
import math

import pytest
import torch

from ganctl.training.wiring import build_generator, build_loss, build_step
from ganctl.training.loop import train

STEPS = 3
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture(autouse=True)
def _fp32_convolutions(monkeypatch):
    """On CUDA, cuDNN may round convolutions through TF32, differently per layout: compare fp32."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def run_steps(cfg, device="cpu") -> list[float]:
    """STEPS training steps of the step `ganctl train` builds from cfg, from seed 0 on fixed
    batches: every scalar the step returns. At the paper's rate 2e-4: the default 1e-3 amplifies
    NHWC-vs-NCHW rounding over 15 critic updates past rtol 1e-4 (measured 2.5e-4)."""
    cfg.optimizer.lr_g = cfg.optimizer.lr_d = 2e-4
    torch.manual_seed(0)
    loss = build_loss(cfg, 0)
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10 if cfg.model.conditional else 0}
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16")
    step, _ = build_step(cfg, info, loss, torch.device(device), autocast)
    B, data = cfg.trainer.batch_size, torch.Generator().manual_seed(1)
    values = []
    for _ in range(STEPS):
        reals = [((torch.rand(B, 1, 28, 28, generator=data) * 2 - 1).to(device),
                  torch.randint(0, 10, (B,), generator=data).to(device) if info["num_classes"] else None)
                 for _ in range(loss.n_critic)]
        values += [v.item() for stats in step(reals) for v in stats.values()]
    return values


@pytest.mark.parametrize("device", DEVICES)
# The InstanceNorm critic (wgan_gp's default): its NHWC kernel sums in another order, a 1e-7
# difference at the first update that 15 critic updates with the penalty's double backward grow
# to 2.3e-3 (measured on the CPU); GroupNorm's stays under 3e-6, so it keeps the tight bound.
@pytest.mark.parametrize("model,loss,norm,rtol", [("dcgan", "bce", "auto", 1e-4),
                                                  ("cdcgan", "wgan_gp", "layer", 1e-4),
                                                  ("cdcgan", "wgan_gp", "instance", 5e-3)])
def test_channels_last_and_fused_adam_match_the_plain_step(make_cfg, model, loss, norm, rtol, device):
    base = (f"model={model}", f"loss={loss}", *([f"model.D.per_sample_norm={norm}"] if norm != "auto" else []))
    plain = run_steps(make_cfg(*base), device)
    assert len(plain) >= 2 * STEPS and all(map(torch.isfinite, torch.tensor(plain)))
    torch.testing.assert_close(run_steps(make_cfg(*base, "trainer.channels_last=true"), device),
                               plain, rtol=rtol, atol=1e-5)
    torch.testing.assert_close(run_steps(make_cfg(*base, "optimizer.fused=true"), device),
                               plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_stays_close_to_fp32(make_cfg, device):
    torch.testing.assert_close(run_steps(make_cfg("model=dcgan", "trainer.precision=bf16"), device),
                               run_steps(make_cfg("model=dcgan"), device), rtol=0.05, atol=0.02)


COMPILE_MODES = [("cpu", "default"), pytest.param("cuda", "reduce-overhead", marks=CUDA)]


@pytest.mark.parametrize("device,mode", COMPILE_MODES)
@pytest.mark.parametrize("model,loss", [("dcgan", "bce"), ("gan", "wgan_gp")])
def test_compiled_step_matches_the_plain_step(make_cfg, model, loss, device, mode):
    """torch.compile (inductor; on CUDA with CUDA graphs); under a gradient penalty D's update
    stays eager, since compile has no double backward. Dropout is off: compiled code draws its
    own masks."""
    plain = [f"model={model}", f"loss={loss}", *(["model.D.dropout=0"] if model == "gan" else [])]
    torch.testing.assert_close(run_steps(make_cfg(*plain, f"trainer.compile={mode}"), device),
                               run_steps(make_cfg(*plain), device), rtol=1e-4, atol=1e-5)


def test_each_compiled_run_starts_from_an_empty_cache(make_cfg, monkeypatch):
    """Runs that follow each other in one process (a Hydra sweep's jobs, the benchmark's rows)
    compile the same forward code: piled onto one cache, their compilations pass torch._dynamo's
    recompile_limit, past which the code would silently run eager. At a limit of 2, which one run
    keeps to (D on detached batches, and on G's fake in G's update), the second configuration
    (weight clipping: a LayerNorm critic) would be a third compilation of D without the reset."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    for loss in ("bce", "wgan"):
        values = run_steps(make_cfg("model=gan", f"loss={loss}", "model.D.dropout=0", "trainer.compile=default"))
        assert all(map(math.isfinite, values)), loss


@CUDA
@pytest.mark.parametrize("switches", [[], ["trainer.precision=bf16", "trainer.channels_last=true", "optimizer.fused=true"],
                                      ["augment=diffaug"], ["augment=ada"]])
def test_the_training_step_never_waits_for_the_device(make_cfg, data_root, switches):
    """No host sync in a step as `ganctl train` runs it (batches drawn from the device-resident
    data, noise, the D and G updates, the EMA update): CUDA's sync debug mode turns any sync into
    an error. The first steps, which allocate and pick kernels, are not watched; all five fall
    in the first epoch of the 64 tiny images (a new epoch's permutation may wait, once an epoch)."""
    from ganctl.data import load_mnist
    from conftest import load_script
    cfg = make_cfg("model=cdcgan", "loss=wgan_gp", "trainer.batch_size=2", *switches)
    data = load_mnist(str(data_root), download=False, split="train", device=torch.device("cuda"))
    run, _ = load_script("bench").ganctl_step(cfg, torch.device("cuda"), data)
    run(), run()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_training_runs_with_every_switch_on(make_cfg, tmp_path):
    cfg = make_cfg("model=cdcgan", "trainer.channels_last=true", "optimizer.fused=true",
                   "trainer.precision=bf16", "trainer.max_steps=3")
    result = train(cfg, tmp_path / "run")
    assert result["step"] == 3 and torch.isfinite(torch.tensor(result["Loss/G"]))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    G = build_generator(cfg.model, state["data"])
    G.load_state_dict(state["G"])  # a channels_last run's checkpoint loads into a plain model
