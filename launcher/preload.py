"""What multiprocessing's own fork server imports before it forks worker processes.

Used where a rank cannot fork the fork server from itself (launcher/forkserver.py):
distributed is imported the launcher's way (launcher/speedups.py), so the server's
import costs less and every worker process it forks inherits the speedups that last
(libyaml for the config refresh that starts a worker process, accepted TLS
connections without tornado's default client context), and distributed's logs are
kept in memory as in the rank (launcher/bootstrap.py, ``keep_dask_logs_in_memory``).
"""

from launcher.bootstrap import keep_dask_logs_in_memory
from launcher.speedups import import_distributed

import_distributed()
keep_dask_logs_in_memory()
