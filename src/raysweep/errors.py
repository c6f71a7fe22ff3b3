"""The one exception type raysweep raises for problems a user can fix."""


class RaySweepError(Exception):
    """A problem with the user's input, reported as one line naming the problem and the fix.

    The CLI prints ``raysweep: <message>`` and exits with status 2, before Ray starts or any MLflow run
    is created whenever the problem can be seen that early.
    """

    #: The CLI's exit status for this error: 2 = bad input (a subclass for a fault sets its own).
    exit_code = 2


class NoModelError(RaySweepError):
    """The best trial left no model to register (e.g. a user's function whose checkpoint holds no MLflow model).

    Not a failed sweep: the summary says so in one line and no version is created.
    """


class TrackingOutage(RaySweepError):
    """The tracking store did not answer for longer than ``mlflow.max_outage_s``; the sweep stopped.

    The CLI prints its one line and exits with status 1 (a fault, not bad input). The parent run is marked
    FAILED once the store answers again: by this driver while it waits, else by the next resume or analyse.
    """

    exit_code = 1


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was stopped by a signal (Ctrl-C or SIGTERM); its MLflow runs were ended KILLED."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        #: The sweep run that ``resume=true`` continues: set when the signal stopped Tune, which saved its state.
        self.run_name: str | None = None

    def __str__(self) -> str:
        """What stopped the sweep and how to continue it (Tune's own hint names its API, not raysweep's)."""
        import signal

        resume = f"; continue it with resume=true sweep.run_name={self.run_name}" if self.run_name else ""
        return (f"interrupted by {signal.Signals(self.signum).name}; the sweep's open MLflow runs were ended KILLED, "
                f"none is left RUNNING{resume}")

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum
