"""User-facing errors: one line naming the file, key or column and what was expected."""


class EcpiError(Exception):
    """A mistake in the user's input; the command line prints it on one line and exits 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
