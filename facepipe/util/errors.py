"""The one exception type a user can cause. The CLI turns it into a single line and exit code 1."""


class FacepipeError(Exception):
    """A problem with the user's input or environment, with the fix in the message."""


class BadImage(FacepipeError):
    """One image cannot be used (corrupt, truncated, too large...). Stages count these per image."""


class OtherConfig(FacepipeError):
    """A stage's output folder or file already holds a run made with another config (other options, or an
    older facepipe whose stage writes something else). Callers that cannot offer --force (the demo) say
    what to do instead."""
