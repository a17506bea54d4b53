"""User mistakes become one line on stderr and a non-zero exit, never a traceback."""


class UserError(Exception):
    """Bad input from the user: the message is the whole story, so no traceback is shown."""
