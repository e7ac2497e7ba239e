import sys

from sparkfs.jobs.cli import main

sys.exit(main())
