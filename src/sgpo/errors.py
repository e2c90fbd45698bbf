"""The error types a user can cause; the CLI maps each to an exit status (ConfigError 2, the
others 1) and prints its message instead of a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A run or compare config that does not validate."""


class DataError(ValueError):
    """Bad input data; the message names the file, row and field."""


class NonFiniteError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient."""


class RunDirBusyError(RuntimeError):
    """Another sgpo process holds the lock on the output directory."""


class SgpoWarning(UserWarning):
    """What sgpo did that the user did not ask for in so many words (the CLI prints it as one
    line: the source line Python would add is pydantic's, not the user's)."""


# What the CLI reports as the user's mistake rather than a bug.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    DataError,
    NonFiniteError,
    RunDirBusyError,
    FileExistsError,
    FileNotFoundError,
    NotADirectoryError,  # an --out that cannot be a directory (sgpo.io.make_out_dir)
)


class TrainingStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a training run between two steps, after a checkpoint of the
    step it had reached (a resume continues from there)."""

    def __init__(self, run_dir: object, step: int, finished: bool = False) -> None:
        super().__init__(f"{run_dir}: stopped at step {step}")
        # finished: the stop came while the run wrote its final outputs, which it completed
        self.run_dir, self.step, self.finished = run_dir, step, finished
