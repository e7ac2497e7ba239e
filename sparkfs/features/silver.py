"""Silver: typed, conformed, deduplicated, validated -- write, audit, publish.

For a run window, :func:`refine` turns the window's bronze rows of one source into silver:

1. **Type** -- each raw string column declared in the spec's ``schema`` is cast with
   ``try_cast``; a value that does not parse fails the row (reason ``parse(<column>)``) instead
   of silently becoming null.
2. **Conform** -- the source's own function (``conform: module:function``) derives the
   conformed columns (e.g. UTC instants from local clock times).
3. **Deduplicate** -- an upstream may deliver a row again (a corrected file): for each key, only
   the rows of its latest delivery (``_ingested_at``) are kept; older deliveries are superseded,
   counted, and stay in bronze. Two rows with one key *in the same delivery* are not resolved
   by guessing: the uniqueness expectation rejects both.
4. **Audit** -- the suite declared in ``conf/expectations.yaml`` runs in Great Expectations (on
   the driver for a day's batch, in Spark for a backfill's); the same expectations evaluated per
   row give each row the labels of the expectations it fails, and GE's counts must agree.
   GE's full result goes to ``ops.validation_results``.
5. **Quarantine** -- failing rows are MERGEd into ``silver.<name>_quarantine`` with
   ``_failed_expectations`` (array of labels), the raw values (``_raw``, JSON) and ``_run_id``
   (the run that first quarantined them with these reasons). Nothing is silently dropped.
6. **Policy** -- STRICT fails the run (after quarantining) when the rejected share passes
   ``max_reject_ratio``, a table-level expectation fails or a day's volume leaves its band
   (:mod:`sparkfs.features.volume`), with the expectations and counts in the message; WARN logs
   and goes on.
7. **Publish** -- the good rows are MERGEd into ``silver.<name>`` on its keys (re-running a day
   changes nothing).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any, Literal

from pydantic import Field
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.core.checks import require_columns
from sparkfs.core.config import StrictModel, import_ref
from sparkfs.core.conflicts import retry_on_conflict
from sparkfs.core.errors import ValidationFailedError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import MergeResult, merge_upsert
from sparkfs.core.rows import latest_rows
from sparkfs.features import bronze
from sparkfs.features.expectations import (
    ExpectationSpec,
    SuiteResult,
    result_row,
    save_results,
    validate,
)
from sparkfs.features.volume import DayVolume, VolumeCheck, day_volumes, history_days

log = logging.getLogger(__name__)

LAYER = "silver"
FAILED = "_failed_expectations"
RAW = "_raw"
LINEAGE_COLUMNS = ("_record_id", "_ingested_at", "_source_file")
DELIVERY_DATE = "_delivery_date"  # the day of the row's delivery: checked by expectations, not published
IS_MALFORMED = "_is_malformed"
STATUS, OPEN, SUPERSEDED = "_status", "open", "superseded"  # quarantine rows: is the delivery current?
MALFORMED_REASON = "malformed record"  # the one reason of a line that did not parse
# Silver table property: what the table was last refined from (see :func:`refined_from`).
REFINED_FROM_PROPERTY = "sparkfs.refined_from"
# The names the spec's ``schema`` may use, and the Spark types they cast to.
TYPES = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "long": T.LongType(),
    "double": T.DoubleType(),
    "boolean": T.BooleanType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
}


class ValidationPolicy(StrictModel):
    """``validation`` in ``conf/pipeline.yaml``: what a run does with rejected rows."""

    policy: Literal["strict", "warn"] = "strict"
    max_reject_ratio: float = Field(0.01, ge=0.0, le=1.0)
    # Great Expectations validates a batch of up to this many rows with its pandas engine on the
    # driver (a day: ~1 s), a bigger one in Spark (one job per metric). 0: always in Spark.
    pandas_max_rows: int = Field(100_000, ge=0)
    # A daily source's day against the same weekday before it (sparkfs.features.volume); null: off.
    volume: VolumeCheck | None = VolumeCheck()


class SilverSpec(StrictModel):
    """One silver table, as declared in ``conf/pipeline.yaml`` under ``silver``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: str
    description: str
    schema_: dict[str, Literal["string", "int", "long", "double", "boolean", "date", "timestamp"]] = Field(
        alias="schema", min_length=1
    )
    conform: str | None = Field(None, pattern=r"^[\w.]+:\w+$")
    keys: list[str] = Field(min_length=1)
    partition_by: str | None = None
    expectations: str

    def conform_fn(self) -> Callable[[DataFrame], DataFrame]:
        if self.conform is None:
            return lambda df: df
        fn: Callable[[DataFrame], DataFrame] = import_ref(self.conform, f"silver {self.name!r}: conform")
        return fn

    @property
    def quarantine(self) -> str:
        return f"{self.name}_quarantine"


@dataclass
class RefineResult:
    """What one silver refinement read, rejected and wrote."""

    table: str
    rows_in: int = 0
    rows_superseded: int = 0
    rows_rejected: int = 0
    rows_out: int = 0
    rejects_by_expectation: dict[str, int] = field(default_factory=dict)
    merge: MergeResult | None = None
    quarantine: MergeResult | None = None
    skipped: bool = False
    volumes: list[DayVolume] = field(default_factory=list)


def typed(bronze_df: DataFrame, schema: Mapping[str, str], what: str) -> DataFrame:
    """Cast the declared raw columns; add ``_parse_failures``: the columns whose value did not parse.

    Raw columns not in ``schema`` are left out (they stay in bronze); lineage columns are kept, and
    so is ``_delivery_date``, the day of the delivery the row came in (a daily source's bronze
    partition), which expectations may compare with the row's own date. A malformed line
    (bronze ``_malformed``) has the one failure ``malformed record`` and its bytes (base64) in ``_raw``.
    """
    require_columns(bronze_df, list(schema), what)
    casts = {c: F.col(c).try_cast(TYPES[t]) for c, t in schema.items()}
    failures = [F.when(F.col(c).isNotNull() & casts[c].isNull(), F.lit(f"parse({c})")) for c in schema]
    malformed = F.col(bronze.MALFORMED) if bronze.MALFORMED in bronze_df.columns else F.lit(None).cast("string")
    raw = F.when(malformed.isNotNull(), F.to_json(F.struct(malformed.alias("_malformed_base64")))).otherwise(
        F.to_json(F.struct(*[F.col(c) for c in bronze_df.columns if not c.startswith("_") and c != bronze.EVENT_DATE]))
    )
    delivery = F.col(bronze.EVENT_DATE) if bronze.EVENT_DATE in bronze_df.columns else F.lit(None).cast("date")
    return bronze_df.select(
        *[casts[c].alias(c) for c in schema],
        *LINEAGE_COLUMNS,
        raw.alias(RAW),
        delivery.alias(DELIVERY_DATE),
        malformed.isNotNull().alias(IS_MALFORMED),
        F.when(malformed.isNotNull(), F.array(F.lit(MALFORMED_REASON)))
        .otherwise(F.filter(F.array(*failures), lambda x: x.isNotNull())).alias("_parse_failures"),
    )


def latest_delivery(df: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Keep, per key, the rows of the latest delivery (max ``_ingested_at``); rows with a null key stay.

    All rows sharing the latest ``_ingested_at`` are kept, so duplicates within one delivery
    reach validation (and are rejected there), never silently reduced to one.
    """
    return latest_rows(
        df, keys, ["_ingested_at"], ties="keep", null_keys="keep", what="silver latest delivery"
    )


def with_failures(df: DataFrame, specs: Sequence[ExpectationSpec]) -> DataFrame:
    """Add ``_failed_expectations``: the labels of the row-level expectations the row fails (+ parse failures)."""
    flags = [F.when(s.failed(), F.lit(s.label)) for s in specs if s.is_row_level]
    failed = F.filter(F.array(*flags), lambda x: x.isNotNull()) if flags else F.array().cast("array<string>")
    # A malformed line has no values to check: its one reason is that it did not parse.
    malformed = F.col(IS_MALFORMED) if IS_MALFORMED in df.columns else F.lit(False)
    reasons = F.when(malformed, F.col("_parse_failures")).otherwise(F.concat(F.col("_parse_failures"), failed))
    return df.withColumn(FAILED, reasons).drop("_parse_failures")


def refine(
    lake: Lakehouse,
    spec: SilverSpec,
    suite: Sequence[ExpectationSpec],
    policy: ValidationPolicy,
    days: Sequence[date] | None,
    run_id: str,
    *,
    validations: list[dict[str, Any]] | None = None,
) -> RefineResult:
    """Refine the bronze rows of ``spec.source`` for ``days`` (None: a once-delivered source) into silver.

    GE's verdict is appended to ``validations`` (the pipeline saves a run's verdicts in one
    commit when it ends), or without it saved to ``ops.validation_results`` at once.

    Raises :class:`~sparkfs.core.errors.ValidationFailedError` under a STRICT policy when the share of
    rejected rows passes ``policy.max_reject_ratio``, a table-level expectation fails or a day's
    volume leaves its band -- after the rejected rows are in quarantine and GE's result is saved,
    so nothing is lost.

    Example: ``refine(lake, flights_spec, suites["flights"], policy, [date(2013, 4, 1)], run.run_id)``.
    """
    full_name = lake.name(LAYER, spec.name)
    result = RefineResult(full_name)
    made_from = refined_from(spec, suite, policy, lake.version(bronze.LAYER, spec.source), days)
    if lake.exists(LAYER, spec.name) and lake.properties(LAYER, spec.name).get(REFINED_FROM_PROPERTY) == made_from:
        log.debug("silver %s: up to date (%s)", full_name, made_from)
        result.skipped = True
        return result
    bronze_df = lake.read(bronze.LAYER, spec.source) if days is None else bronze.read_days(lake, spec.source, days)
    delivered_df = bronze_df if days is None else latest_day_delivery(bronze_df)
    if days is not None and policy.volume:
        around = bronze.read_days(lake, spec.source, history_days(days, policy.volume))
        result.volumes = day_volumes(latest_day_delivery(around), bronze.EVENT_DATE, days, policy.volume)

    typed_df = typed(delivered_df, spec.schema_, f"bronze {lake.name(bronze.LAYER, spec.source)}")
    conformed = spec.conform_fn()(typed_df)
    require_columns(conformed, [*spec.keys, *([spec.partition_by] if spec.partition_by else [])],
                    f"the conformed rows of silver {spec.name!r}")
    candidate = latest_delivery(conformed, spec.keys).persist()
    try:
        result.rows_in = bronze_df.count()
        evaluated = candidate.count()
        result.rows_superseded = result.rows_in - evaluated
        # Great Expectations sees the rows that parsed; a malformed line is rejected for that alone.
        well_formed = candidate.where(~F.col(IS_MALFORMED)).drop(RAW, "_parse_failures", IS_MALFORMED)
        flagged = with_failures(candidate, suite).persist()
        try:
            labels = [s.label for s in suite if s.is_row_level] + [f"parse({c})" for c in spec.schema_] + [
                MALFORMED_REASON]
            counts = _failure_counts(flagged, labels)
            suite_result = validate(well_formed, spec.expectations, suite, counts,
                                    rows=evaluated, pandas_max_rows=policy.pandas_max_rows)
            rejected = flagged.where(F.size(FAILED) > 0)
            result.rows_rejected = int(counts.pop("_any", 0))
            result.rejects_by_expectation = {k: v for k, v in counts.items() if v}
            if result.rows_rejected or (days is not None and lake.exists(LAYER, spec.quarantine)):
                result.quarantine = _quarantine(lake, spec, rejected.drop(IS_MALFORMED), days, run_id)
            verdict = result_row(suite_result, full_name, result.rows_rejected, days, run_id)
            if validations is None:
                save_results(lake, [verdict])
            else:
                validations.append(verdict)
            _apply_policy(spec, policy, suite_result, result, evaluated)
            good = flagged.where(F.size(FAILED) == 0).drop(FAILED, RAW, DELIVERY_DATE, IS_MALFORMED)
            result.merge = _publish(lake, spec, good, days if days is not None and retracts(spec, suite) else None)
            result.rows_out = result.merge.source_rows
        finally:
            flagged.unpersist()
    finally:
        candidate.unpersist()
    record = {REFINED_FROM_PROPERTY: made_from}  # one more commit, only when it changed
    retry_on_conflict(partial(lake.ensure_properties, LAYER, spec.name, record), full_name,
                      "setting the refined-from property")
    return result


def refined_from(spec: SilverSpec, suite: Sequence[ExpectationSpec], policy: ValidationPolicy,
                 bronze_version: int | None, days: Sequence[date] | None) -> str:
    """What a refine's result follows from: the declarations (spec, suite, policy), the bronze
    version and the days. Kept in the table's :data:`REFINED_FROM_PROPERTY` after a refine; a
    refine that finds the same string skips (its MERGE would change nothing): a rerun of a day
    skips what did not change. The bronze version is looked up before bronze is read: a delivery
    ingested in between by a concurrent run makes the next refine run again, never skip.
    A change to the conform function's code is not seen: re-deliver, or change the spec."""
    declared = json.dumps([spec.model_dump(mode="json"), [e.model_dump(mode="json") for e in suite],
                           policy.model_dump(mode="json")], sort_keys=True)
    declaration = hashlib.sha256(declared.encode()).hexdigest()[:16]
    return f"declaration {declaration}; bronze v{bronze_version}; {_span(days)}"


def _span(days: Sequence[date] | None) -> str:
    if days is None:
        return "all days"
    ordered = sorted(set(days))
    if (ordered[-1] - ordered[0]).days + 1 == len(ordered):
        return f"days {ordered[0]}..{ordered[-1]}"
    return "days " + ",".join(map(str, ordered))


def _failure_counts(flagged: DataFrame, labels: Sequence[str]) -> dict[str, int]:
    """Rows flagged per label, plus ``_any``: rows failing anything (one pass over the batch)."""
    names = [*labels, "_any"]
    counts = [F.count_if(F.array_contains(FAILED, label)) for label in labels]
    row = flagged.select(*counts, F.count_if(F.size(FAILED) > 0)).first()
    assert row is not None
    return {name: int(row[i]) for i, name in enumerate(names)}


def _quarantine(
    lake: Lakehouse, spec: SilverSpec, rejected: DataFrame, days: Sequence[date] | None, run_id: str
) -> MergeResult:
    """MERGE rejected rows into the quarantine table on ``_record_id``, ``_status`` ``open``.

    A row already quarantined with the same reasons keeps its original ``_run_id``, so a rerun
    changes nothing; new reasons (a changed suite) update the row and its run id. With ``days``
    (a daily source), the open rows of those days that this validation no longer rejects (their
    delivery was superseded by a new one) become ``superseded``: a repaired day has no open rejects.
    """
    rows = rejected.withColumns({"_run_id": F.lit(run_id), STATUS: F.lit(OPEN)})
    exists = lake.exists(LAYER, spec.quarantine)
    if exists:
        lake.add_columns(LAYER, spec.quarantine, rows.schema)
        earlier_df = lake.read(LAYER, spec.quarantine)
        earlier = earlier_df.select(
            "_record_id", F.col(FAILED).alias("_earlier_failed"), F.col("_run_id").alias("_earlier_run_id")
        )
        rows = (
            rows.join(earlier, "_record_id", "left")
            .withColumn(
                "_run_id",
                F.when(F.col("_earlier_failed") == F.col(FAILED), F.col("_earlier_run_id")).otherwise(F.col("_run_id")),
            )
            .drop("_earlier_failed", "_earlier_run_id")
        )
        if days is not None:
            superseded = (
                earlier_df.where(F.col(DELIVERY_DATE).isin(list(days)) & F.coalesce(F.col(STATUS) == OPEN, F.lit(True)))
                .join(rejected.select("_record_id"), "_record_id", "left_anti")
                .withColumn(STATUS, F.lit(SUPERSEDED))
            )
            rows = rows.unionByName(superseded.select(*rows.columns))
    lake.create(
        LAYER, spec.quarantine, rows.schema,
        comment=f"Rows of silver {spec.name!r} that failed validation, with the failed expectations",
        column_comments={
            FAILED: "labels of the expectations the row failed (parse(<col>): the raw value did not parse)",
            RAW: "the row's raw values as they arrived in bronze (JSON)",
            "_run_id": "the run that first quarantined the row with these reasons",
            STATUS: "open: the row's delivery is current; superseded: the day was delivered again",
            DELIVERY_DATE: "the day of the delivery the row came in",
        },
    )
    return merge_upsert(lake, LAYER, spec.quarantine, rows, keys=["_record_id"])


def _publish(lake: Lakehouse, spec: SilverSpec, good: DataFrame, days: Sequence[date] | None) -> MergeResult:
    """MERGE the good rows; with ``days``, the table's rows of those days that the delivery no
    longer holds (or now rejects) are retracted."""
    lake.create(
        LAYER, spec.name, good.schema,
        partition_by=[spec.partition_by] if spec.partition_by else [],
        comment=spec.description,
    )
    return merge_upsert(
        lake, LAYER, spec.name, good, keys=spec.keys, partition_by=spec.partition_by, retract_partitions=days
    )


def retracts(spec: SilverSpec, suite: Sequence[ExpectationSpec]) -> bool:
    """Whether a re-delivered day may retract silver rows: only when the table is partitioned by
    the row's date and the suite checks that date equals the delivery's day (so a day's
    partition holds that day's delivery and nothing else)."""
    pair = {spec.partition_by, DELIVERY_DATE}
    return spec.partition_by is not None and any(
        s.type == "expect_column_pair_values_to_be_equal" and {s.kwargs.get("column_A"), s.kwargs.get("column_B")} == pair
        for s in suite
    )


def latest_day_delivery(bronze_df: DataFrame) -> DataFrame:
    """The bronze rows of each day's newest delivery: a day delivered again is replaced as a whole.

    A delivery is what one run ingested for the day (its files, ``_run_id``); the newest is the
    one with the latest landing time (``_ingested_at``). Earlier deliveries stay in bronze.
    """
    newest = F.max_by("_run_id", "_ingested_at").over(Window.partitionBy(bronze.EVENT_DATE))
    return bronze_df.withColumn("_newest_run", newest).where(F.col("_run_id") == F.col("_newest_run")).drop("_newest_run")


def _apply_policy(
    spec: SilverSpec, policy: ValidationPolicy, suite_result: SuiteResult, result: RefineResult, evaluated: int
) -> None:
    ratio = result.rows_rejected / evaluated if evaluated else 0.0
    table_failures = [o for o in suite_result.failed() if o.unexpected_count is None]
    problems = []
    if ratio > policy.max_reject_ratio:
        per = ", ".join(f"{label}: {n}" for label, n in sorted(result.rejects_by_expectation.items()))
        problems.append(
            f"{result.rows_rejected} of {evaluated} rows rejected ({ratio:.2%}), above the limit "
            f"max_reject_ratio={policy.max_reject_ratio:.2%}; rows failing each expectation: {per}"
        )
    for o in table_failures:
        problems.append(f"table-level expectation {o.label} failed (observed {o.observed_value!r})")
    problems += [f"volume outside its band: {v.describe()}" for v in result.volumes if not v.ok]
    if not problems:
        return
    message = (
        f"validation of silver {spec.name!r} (suite {spec.expectations!r}) failed: " + "; ".join(problems)
        + f". Rejected rows are in silver {spec.quarantine!r}; nothing was published."
    )
    if policy.policy == "strict":
        raise ValidationFailedError(message)
    log.warning("%s (policy WARN: publishing the good rows)", message.replace("nothing was published.", ""))
