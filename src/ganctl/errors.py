"""User mistakes become one line on stderr and a non-zero exit, never a traceback."""


class UserError(Exception):
    """Bad input from the user: the message is the whole story, so no traceback is shown."""


class Interrupted(UserError):
    """SIGINT/SIGTERM: the run saved a checkpoint and stops; exit 128 + signal number, as shells do."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
