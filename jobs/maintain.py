"""spark-submit entry: spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/maintain.py"""

import sys

from sparkfs.jobs.entry_points import main

if __name__ == "__main__":
    sys.exit(main("maintain"))
