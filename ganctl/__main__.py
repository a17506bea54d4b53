"""`python -m ganctl train ...` is the same as `ganctl train ...` (torchrun uses this form)."""
from ganctl.cli.main import main

if __name__ == "__main__":
    main()
