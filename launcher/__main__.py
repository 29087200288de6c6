"""``python -m launcher [options] [SCRIPT [ARGS...] | -m MODULE [ARGS...]]``."""

from launcher.bootstrap import main

main()
