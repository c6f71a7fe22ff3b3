"""The one exception type raysweep raises for problems a user can fix."""


class RaySweepError(Exception):
    """A problem with the user's input, reported as one line naming the problem and the fix.

    The CLI prints ``raysweep: <message>`` and exits with status 2, before Ray starts or any MLflow run
    is created whenever the problem can be seen that early.
    """
