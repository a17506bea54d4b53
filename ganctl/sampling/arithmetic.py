"""Latent vector arithmetic (Radford et al. 2016, section 6.3): `ganctl sample arithmetic=...`.

    arithmetic="3+7-12"               the latents of images 3 and 7 of the seeded grid, less 12's
    arithmetic="[3,4,5]-[12,13]+[20]" each term the mean latent of several images (the paper uses 3)

Indices name images of `ganctl sample seed=<seed>` (row-major, from 0), for a conditional model
with one `label=`. The PNG has a row per term (its images, then the image of its mean latent) and
a last row of results: the combined latent, then the same with small uniform noise added.
"""
import re
from pathlib import Path

import torch
from torchvision.utils import save_image

from ganctl.errors import UserError
from ganctl.sampling.generate import latents

JITTER = 0.25  # the paper's "uniform noise sampled with scale +-0.25" added to the result
TERM = re.compile(r"\s*([+-]?)\s*(\d+|\[\s*\d+(?:\s*,\s*\d+)*\s*\])\s*")


MAX_LENGTH, MAX_TERMS, MAX_DIGITS = 1000, 64, 9  # an expression's characters, terms, and an index's digits


def parse(expression: str) -> list[tuple[int, list[int]]]:
    """`"[3,4]-12+7"` -> [(1, [3, 4]), (-1, [12]), (1, [7])]: each term's sign and indices."""
    text, terms, pos = str(expression), [], 0
    if len(text) > MAX_LENGTH:
        raise UserError(f"arithmetic= is {len(text)} characters long; write at most {MAX_LENGTH}")
    while pos < len(text):
        m = TERM.match(text, pos)
        if not m or m.end() == pos or (terms and not m.group(1)):
            raise UserError(f"arithmetic={expression!r}: cannot read it at {text[pos:pos + 10]!r}; write terms "
                            f"like 3 or [3,4,5] joined by + and -, e.g. arithmetic=\"[3,4,5]-[12,13]+[20]\"")
        digits = re.findall(r"\d+", m.group(2))
        if any(len(d) > MAX_DIGITS for d in digits):
            raise UserError(f"arithmetic={text[:40]!r}...: an index of {max(map(len, digits))} digits is out of range")
        terms.append((-1 if m.group(1) == "-" else 1, [int(d) for d in digits]))
        if len(terms) > MAX_TERMS:
            raise UserError(f"arithmetic= has more than {MAX_TERMS} terms; a picture of them has a row each")
        pos = m.end()
    if not terms:
        raise UserError("arithmetic= is empty; write terms like 3 or [3,4,5] joined by + and -")
    return terms


def combine(terms: list[tuple[int, list[int]]], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(each term's mean latent (T, z_dim), their signed sum (z_dim,)) from the grid's latents z."""
    means = torch.stack([z[idx].mean(0) for _, idx in terms])
    signs = torch.tensor([float(s) for s, _ in terms])
    return means, (signs[:, None] * means).sum(0)


def render(G, expression: str, results: int, z_dim: int, noise: str, seed: int, label: int | None,
           device, limit: int = 100_000) -> dict:
    """The images of every term, of its mean latent and of the results (G in [-1, 1], on the CPU)."""
    terms = parse(expression)
    top = max(i for _, idx in terms for i in idx)
    if top >= limit:
        raise UserError(f"arithmetic={expression!r}: index {top} is out of range (0..{limit - 1})")
    if results < 1:
        raise UserError(f"n={results}: ask for at least one result")
    z = latents(top + 1, z_dim, noise, seed)  # row i: image i of `ganctl sample seed=<seed>`
    means, result = combine(terms, z)
    g = torch.Generator().manual_seed(seed + 1)
    jitter = (torch.rand(results - 1, z_dim, generator=g) * 2 - 1) * JITTER
    result_z = torch.cat([result[None], result + jitter])

    def draw(latents: torch.Tensor) -> torch.Tensor:
        y = None if label is None else torch.full((len(latents),), label, dtype=torch.long, device=device)
        with torch.no_grad():
            return G(latents.to(device), y).float().cpu()

    return {"terms": [(sign, idx, draw(z[idx])) for sign, idx in terms], "means": draw(means),
            "result_z": result_z, "results": draw(result_z)}


def write(drawn: dict, out: Path) -> Path:
    """One PNG: a row per term (its images, a blank, its mean's image), then the results' row."""
    width = max(max(len(idx) for _, idx, _ in drawn["terms"]) + 2, len(drawn["results"]))
    blank = torch.full_like(drawn["means"][0], -1.0)
    cells = []
    for k, (_, idx, images) in enumerate(drawn["terms"]):
        row = list(images) + [blank] * (width - len(idx) - 1) + [drawn["means"][k]]
        cells += row
    cells += list(drawn["results"]) + [blank] * (width - len(drawn["results"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image((torch.stack(cells).clamp(-1, 1) + 1) / 2, out, nrow=width, padding=2)
    return out
