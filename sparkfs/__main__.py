import sys

from sparkfs.cli import main

sys.exit(main())
