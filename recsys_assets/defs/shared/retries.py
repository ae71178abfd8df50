"""How steps meet a passing fault: retried in the same run, after a growing pause.

What retries: errors of the moment (the warehouse file locked by another writer, a store briefly
unreachable). What does not: bad input, which the assets refuse with `Failure(allow_retries=False)`, and
outages that outlast the pauses (the run fails, the previous tables and release keep serving; Dagster's run
retries in dagster.yaml re-execute a run whose worker died).
"""

from dagster import Backoff, RetryPolicy

# 2 s, 4 s, 8 s: longer than a competing load or a store's restart, short enough to keep a day fresh.
TRANSIENT_FAULTS = RetryPolicy(max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL)
