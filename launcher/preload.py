"""What multiprocessing's own fork server imports before it forks worker processes.

Used where a rank cannot fork the fork server from itself (launcher/forkserver.py):
distributed is imported the launcher's way (launcher/speedups.py), so the server's
import costs less and every worker process it forks inherits the speedups that last
(libyaml for the config refresh that starts a worker process, accepted TLS
connections without tornado's default client context).
"""

from launcher.speedups import import_distributed

import_distributed()
