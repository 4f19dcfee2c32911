"""User-facing errors: one line naming the file, key or column and what was expected."""
import sys


class EcpiError(Exception):
    """A mistake in the user's input; the command line prints it on one line and exits 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def exit_code_of(main, argv=None) -> int:
    """The exit code of a command's `main(argv)` (default: the process's arguments): a user
    mistake (EcpiError) is printed as one line `error: ...` on stderr and gives its exit code
    (2), an interruption `error: interrupted` and 130. Every console script goes through it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return int(main(argv) or 0)
    except EcpiError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
