"""ganctl: config-driven GAN training. Run `ganctl train --help`."""

import time

__version__ = "0.1.0"

# When the process first imported ganctl (the console script does so at once): `ganctl train`
# counts its start-up (imports, config, data, networks) from here.
STARTED = time.perf_counter()
