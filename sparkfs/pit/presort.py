"""The presort both window plans share: rows partitioned by key and sorted on one long first.

A window over (keys, time) sorts its partition by (keys, time) itself. That sort compares whole
rows wherever two rows share a key, which is most comparisons. A sort on one long is a radix
sort, and it leaves the rows in runs already in (keys, time) order, which the window's sort (a
TimSort) then only has to check. Speed only, never rows: rows whose keys share the hash, or whose
times share a step, are put in order by the window's sort as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# The long is PRESORT_HASH_BITS of a hash of the keys, then the time in steps of
# 2**PRESORT_STEP_BITS order units (2 per microsecond: about 4 ms steps, PRESORT_TIME_BITS of
# them: 71 years back from the last spine time).
PRESORT_HASH_BITS = 24
PRESORT_TIME_BITS = 39
PRESORT_STEP_BITS = 13


def presorted(df: DataFrame, keys: Sequence[str], order: Column, top: int) -> DataFrame:
    """``df`` partitioned by ``keys`` the way a window over them needs, and each partition sorted
    on one long: a hash of the keys, then ``order`` in coarse steps (values up to ``top``)."""
    span = 1 << (PRESORT_TIME_BITS + PRESORT_STEP_BITS)
    since = F.least(F.greatest(order - F.lit(top - span + 1), F.lit(0)), F.lit(span - 1))
    bucket = F.xxhash64(*[F.col(k) for k in keys]).bitwiseAND(F.lit((1 << PRESORT_HASH_BITS) - 1))
    sort_key = F.shiftleft(bucket, PRESORT_TIME_BITS).bitwiseOR(
        F.shiftright(F.coalesce(since, F.lit(0)), PRESORT_STEP_BITS)
    )
    return df.repartition(*keys).sortWithinPartitions(sort_key)
