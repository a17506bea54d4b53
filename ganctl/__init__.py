"""ganctl: config-driven GAN training. Run `ganctl train --help`; in Python, `ganctl.load(run)`.

    import ganctl
    G = ganctl.load("outputs/<day>/<run>")
    G.grid(G.sample(16, seed=0))
"""

import time

from ganctl.errors import UserError  # every mistake the API reports: the CLI's one-line message

__version__ = "0.1.0"

# When the process first imported ganctl (the console script does so at once): `ganctl train`
# counts its start-up (imports, config, data, networks) from here.
STARTED = time.perf_counter()


def load(path, which: str = "last", generator: str = "ema", device: str = "auto"):
    """A trained generator (ganctl.api.Generator) from a run directory or a checkpoint file."""
    from ganctl.api import load as load_generator
    return load_generator(path, which, generator, device)
