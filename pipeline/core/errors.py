"""The one exception type that stages turn into a one-line error message (no stack trace)."""


class PipelineError(Exception):
    """A problem with the user's input or environment, reported as one line naming the culprit."""
