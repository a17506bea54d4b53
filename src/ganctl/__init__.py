"""ganctl: config-driven GAN training. Run `ganctl train --help`."""

__version__ = "0.1.0"
