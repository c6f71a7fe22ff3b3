"""The one exception type raysweep raises for problems a user can fix."""


class RaySweepError(Exception):
    """A problem with the user's input, reported as one line naming the problem and the fix.

    The CLI prints ``raysweep: <message>`` and exits with status 2, before Ray starts or any MLflow run
    is created whenever the problem can be seen that early.
    """


class NoModelError(RaySweepError):
    """The best trial left no model to register (e.g. a user's function whose checkpoint holds no MLflow model).

    Not a failed sweep: the summary says so in one line and no version is created.
    """


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was stopped by a signal (Ctrl-C or SIGTERM); its MLflow runs were ended KILLED."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum
