"""``python -m cli``: raftctl without the console script installed."""

import sys

from cli.raftctl import main

sys.exit(main())
