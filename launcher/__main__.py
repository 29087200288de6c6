"""``python -m launcher [options] [SCRIPT | -m MODULE | -c COMMAND] [ARGS...]``."""

from launcher.bootstrap import main

main()
