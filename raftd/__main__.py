import sys

from raftd.main import main

sys.exit(main())
