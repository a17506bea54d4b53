"""Where and how a run computes: its device, seeds, the RNG kept apart from evaluation, and the
stop signals the training loop reads between steps."""
import os
import platform
import random
import signal
import threading
from pathlib import Path

import numpy as np
import torch

from ganctl.training import distributed
from ganctl.errors import UserError


def resolve_device(name: str, local_rank: int = 0, key: str = "trainer.device") -> torch.device:
    """`auto` is cuda where available; under torchrun each rank takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{key}={name} is not a device: use auto, cpu, cuda, cuda:<index> or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}={name} but CUDA is not available here; use {key}=cpu or auto")
    if device.type == "cuda" and distributed.launched():
        device = torch.device("cuda", local_rank)
    return device


def device_name(device: torch.device) -> str:
    """What benchmarks and results tables name a machine by: the GPU's name, or the CPU's model
    with the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"CPU ({cpu}, {torch.get_num_threads()} threads of {os.cpu_count()} cores)"


def cudnn_autotuner(device: torch.device, deterministic: bool) -> bool:
    """Whether a run lets cuDNN time its algorithms (cudnn.benchmark): on CUDA, unless
    trainer.deterministic asks for repeatable runs."""
    return device.type == "cuda" and not deterministic


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device's default generator


class StopSignals:
    """SIGINT/SIGTERM set a flag that the loop reads after each step, so the step in flight
    finishes and a checkpoint is written before the run stops."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # signal() works only there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def rng_untouched(device):
    """Evaluation draws its own random numbers (a classifier's init, subsets): the training RNG
    stream must come out as it went in, or a run would depend on its eval settings and cache."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
