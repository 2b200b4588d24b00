"""The one exception type the CLI turns into a one-line message."""


class MatchsigError(Exception):
    """A user-facing error: bad input, missing file, unsupported model.

    Its message is one line that names the problem; the CLI prints it without a traceback.
    """
