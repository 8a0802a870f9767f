"""One exception type per user-facing failure family.

Library code raises these with a one-line message that names the thing at fault and the
fix; only `ramsweep.cli` turns them into a printed line and an exit code.
"""


class RamsweepError(Exception):
    """Base of every error a user can cause or fix."""

    exit_code = 1


class ConfigError(RamsweepError):
    """An experiment set or spec is invalid (bad tier string, unknown key, ...)."""

    exit_code = 2


class DataError(RamsweepError):
    """A corpus, split or tokenizer cannot be loaded or is unusable."""

    exit_code = 2


class NothingMatches(RamsweepError):
    """A filter or view that selects nothing in the results read: said in one line, exit 1 (as
    grep), so a script or a morning check never mistakes headings for an answer."""

    exit_code = 1


class StoreError(RamsweepError):
    """A results file cannot be read or written safely."""

    exit_code = 3


class ExecutorLost(RamsweepError):
    """The machines running the experiments are gone (a Dask scheduler lost): the results so far
    are intact and a re-run resumes."""

    exit_code = 4
