"""Memory that a size asks for, estimated before anything is allocated: a config can name an image
size or a width that needs more memory than the machine has, and the process would be killed (or
swap for an hour) instead of getting one line.

    need = training_bytes(footprint(G_meta, D_meta, batch_size=128, z_dim=100, num_classes=10))
    refuse_if_too_large("training model=dcgan at 1024 px", need, device, "try dataset.img_size=128")
"""
import os

import torch

from ganctl.errors import UserError

ADAM_COPIES = 4  # a weight, its gradient and Adam's two moments, per parameter


def available_bytes(device) -> int | None:
    """Memory free for this process on `device` (None where it cannot be told)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def refuse_if_too_large(what: str, need: int, device, hint: str) -> None:
    """One line before the allocation where `need` bytes exceed what `device` has free."""
    free = available_bytes(device)
    if free is not None and need > free:
        raise UserError(f"{what} needs about {gigabytes(need)} of memory and {torch.device(device)} has "
                        f"{gigabytes(free)} free; {hint}")


def parameter_bytes(*nets: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for net in nets for p in net.parameters())


def activation_bytes(net: torch.nn.Module, *inputs) -> tuple[int, torch.Tensor | None]:
    """The bytes of every layer's output in one forward pass of `net` on `inputs` (what backward
    keeps), and the output; run on the meta device, so it allocates nothing. (0, None) where a
    layer cannot run there."""
    total = [0]

    def count(module, args, output):
        if isinstance(output, torch.Tensor) and not list(module.children()):
            total[0] += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in net.modules()]
    try:
        with torch.no_grad():
            out = net(*inputs)
    except Exception:  # an op without a meta kernel: the parameters alone are still counted
        return 0, None
    finally:
        for h in hooks:
            h.remove()
    return total[0], out


def footprint(G: torch.nn.Module, D: torch.nn.Module, batch_size: int, z_dim: int, num_classes: int) -> dict:
    """Bytes of G's and D's parameters and of their layer outputs on one batch, for G and D built
    on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        z = torch.zeros(batch_size, z_dim)
        y = torch.zeros(batch_size, dtype=torch.long) if num_classes else None
    g_acts, fake = activation_bytes(G, z, y)
    d_acts, _ = activation_bytes(D, fake, y) if fake is not None else (0, None)
    return {"G": parameter_bytes(G), "D": parameter_bytes(D), "G_acts": g_acts, "D_acts": d_acts}


def training_bytes(fp: dict) -> int:
    """A training step's memory: weights, gradients and Adam's moments of both nets, G's moving
    average, G's batch and D on a real and a generated batch."""
    return ADAM_COPIES * (fp["G"] + fp["D"]) + fp["G"] + fp["G_acts"] + 2 * fp["D_acts"]
