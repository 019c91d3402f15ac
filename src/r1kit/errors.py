"""The one exception type a user can cause.

Anything a user can get wrong (a config key, a data line, a model path, a missing sandbox) raises
`R1kitError` with one sentence naming the thing and the fix. The CLI prints that sentence and exits
with status 2, without a traceback; a notebook user sees an ordinary exception.
"""


class R1kitError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
