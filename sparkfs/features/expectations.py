"""Expectation suites declared in ``conf/expectations.yaml``, run by Great Expectations 1.x.

A suite is a list of Great Expectations expectations, written as GE's own ``type`` + ``kwargs``::

    suites:
      flights:
        - type: expect_column_values_to_not_be_null
          kwargs: {column: carrier}
        - type: expect_column_values_to_be_between
          kwargs: {column: dep_delay, min_value: -120, max_value: 1440}

The declared suite is the single source of truth for two things:

- :func:`run_suite` validates a DataFrame with Great Expectations (an ephemeral context, a Spark
  or pandas dataframe asset, the suite, a ``ValidationDefinition``) and returns GE's result, which
  :func:`save_results` appends to ``ops.validation_results``. :func:`validate` picks the engine:
  pandas on the driver for a small batch (a day), Spark for a big one (a backfill).
- :meth:`ExpectationSpec.failed` is the same expectation as a Spark column, true for a row GE
  counts as unexpected. Silver uses it to say *which* rows failed *which* expectations, so they
  can be quarantined with their reasons; :func:`check_agreement` verifies, per expectation, that
  these row flags count exactly what GE counted.

Row-level expectations follow GE's rules: a null is "missing", not unexpected, except for
``not_be_null``; ``compound_columns_to_be_unique`` ignores rows whose columns are all null.
``mostly`` is not accepted: the share of rejected rows a run tolerates is the validation policy's
``max_reject_ratio``, and every unexpected row is quarantined. Table-level expectations (row
counts, columns) have no rows to quarantine; a failure fails a STRICT run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.core.config import StrictModel, load_yaml
from sparkfs.core.errors import ConfigError, SparkfsError
from sparkfs.core.lakehouse import APPEND_LOG_PROPERTIES, Lakehouse
from sparkfs.core.merge import append_rows

log = logging.getLogger(__name__)

Engine = Literal["spark", "pandas"]
VALIDATION_TABLE = ("ops", "validation_results")
VALIDATION_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("table_name", T.StringType(), False),
        T.StructField("suite", T.StringType(), False),
        T.StructField("window_start", T.DateType(), True),
        T.StructField("window_end", T.DateType(), True),
        T.StructField("validated_at", T.TimestampType(), False),
        T.StructField("success", T.BooleanType(), False),
        T.StructField("rows_evaluated", T.LongType(), False),
        T.StructField("rows_rejected", T.LongType(), False),
        T.StructField("failed_expectations", T.StringType(), True),
        T.StructField("result", T.StringType(), False),
    ]
)

# Expectation type -> the kwargs sparkfs can also evaluate per row (all others are rejected).
ROW_LEVEL: dict[str, set[str]] = {
    "expect_column_values_to_not_be_null": {"column"},
    "expect_column_values_to_be_between": {"column", "min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_in_set": {"column", "value_set"},
    "expect_column_values_to_not_be_in_set": {"column", "value_set"},
    "expect_column_values_to_match_regex": {"column", "regex"},
    "expect_column_values_to_be_unique": {"column"},
    "expect_compound_columns_to_be_unique": {"column_list"},
    # Two columns of a row agree (a row's date and its delivery's day); rows missing either are
    # not checked (ignore_row_if: either_value_is_missing, the only setting sparkfs evaluates).
    "expect_column_pair_values_to_be_equal": {"column_A", "column_B", "ignore_row_if"},
}
PAIR_IGNORE = "either_value_is_missing"
TABLE_LEVEL: dict[str, set[str]] = {
    "expect_table_row_count_to_be_between": {"min_value", "max_value"},
    "expect_column_to_exist": {"column"},
    "expect_table_columns_to_match_set": {"column_set", "exact_match"},
}


class ExpectationSpec(StrictModel):
    """One expectation: a Great Expectations type, its kwargs, and an optional readable name."""

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> ExpectationSpec:
        allowed = ROW_LEVEL.get(self.type, TABLE_LEVEL.get(self.type))
        if allowed is None:
            raise ValueError(
                f"expectation type {self.type!r} is not supported; supported: "
                f"{sorted(ROW_LEVEL) + sorted(TABLE_LEVEL)}"
            )
        if self.type == "expect_column_pair_values_to_be_equal" and self.kwargs.get("ignore_row_if") != PAIR_IGNORE:
            raise ValueError(f"{self.type}: set ignore_row_if: {PAIR_IGNORE} (rows missing a value are not compared)")
        unknown = sorted(set(self.kwargs) - allowed)
        if unknown:
            hint = " ('mostly' is replaced by validation.max_reject_ratio)" if "mostly" in unknown else ""
            raise ValueError(f"{self.type}: unknown kwargs {unknown}; allowed: {sorted(allowed)}{hint}")
        return self

    @property
    def label(self) -> str:
        """The name quarantine rows and errors use, e.g. ``expect_column_values_to_not_be_null(carrier)``."""
        if self.name:
            return self.name
        columns = self.kwargs.get("column_list") or [c for c in (self.kwargs.get("column_A"), self.kwargs.get("column_B")) if c]
        target = self.kwargs.get("column") or ",".join(columns)
        return f"{self.type}({target})" if target else self.type

    @property
    def is_row_level(self) -> bool:
        return self.type in ROW_LEVEL

    def failed(self) -> Column:
        """True for a row Great Expectations counts as unexpected (null for "not evaluated" is never used)."""
        kw = self.kwargs
        if self.type == "expect_column_values_to_not_be_null":
            return F.col(kw["column"]).isNull()
        if self.type == "expect_column_values_to_be_between":
            c = F.col(kw["column"])
            too_low = F.lit(False)
            too_high = F.lit(False)
            if kw.get("min_value") is not None:
                too_low = c <= kw["min_value"] if kw.get("strict_min") else c < kw["min_value"]
            if kw.get("max_value") is not None:
                too_high = c >= kw["max_value"] if kw.get("strict_max") else c > kw["max_value"]
            return c.isNotNull() & (too_low | too_high)
        if self.type == "expect_column_values_to_be_in_set":
            c = F.col(kw["column"])
            return c.isNotNull() & ~c.isin(list(kw["value_set"]))
        if self.type == "expect_column_values_to_not_be_in_set":
            c = F.col(kw["column"])
            return c.isNotNull() & c.isin(list(kw["value_set"]))
        if self.type == "expect_column_values_to_match_regex":
            c = F.col(kw["column"])
            return c.isNotNull() & ~c.rlike(kw["regex"])
        if self.type == "expect_column_values_to_be_unique":
            c = F.col(kw["column"])
            return c.isNotNull() & (F.count(F.lit(1)).over(Window.partitionBy(c)) > 1)
        if self.type == "expect_compound_columns_to_be_unique":
            cols = [F.col(c) for c in kw["column_list"]]
            any_present = F.lit(False)
            for c in cols:
                any_present = any_present | c.isNotNull()
            return any_present & (F.count(F.lit(1)).over(Window.partitionBy(*cols)) > 1)
        if self.type == "expect_column_pair_values_to_be_equal":
            a, b = F.col(kw["column_A"]), F.col(kw["column_B"])
            return a.isNotNull() & b.isNotNull() & (a != b)
        raise SparkfsError(f"{self.type} is a table-level expectation: it has no failing rows")

    def to_gx(self) -> Any:
        """The Great Expectations expectation object (validates the kwargs)."""
        import great_expectations as gx

        cls_name = "".join(part.capitalize() for part in self.type.split("_"))
        cls = getattr(gx.expectations, cls_name, None)
        if cls is None:
            raise ConfigError(f"Great Expectations has no expectation {self.type!r} ({cls_name})")
        return cls(**self.kwargs, meta={"sparkfs_label": self.label})


class SuitesFile(StrictModel):
    """``conf/expectations.yaml``: expectation suites by name."""

    suites: dict[str, list[ExpectationSpec]]

    @model_validator(mode="after")
    def _unique_labels(self) -> SuitesFile:
        for name, specs in self.suites.items():
            labels = [s.label for s in specs]
            dupes = sorted({x for x in labels if labels.count(x) > 1})
            if dupes:
                raise ValueError(f"suite {name!r}: expectations {dupes} appear twice; give them distinct 'name's")
        return self


def load_suites(path: Path | str, *, check_kwargs: bool = True) -> dict[str, list[ExpectationSpec]]:
    """Read ``conf/expectations.yaml``; with ``check_kwargs`` each expectation is also built as a
    GE object to check its kwargs (the jobs do that while Spark starts: GE takes seconds to import;
    a file checked before by this process, unchanged since, is not checked again)."""
    if not check_kwargs:
        return load_yaml(path, SuitesFile).suites
    stat = Path(path).stat()
    return {name: list(specs) for name, specs in _checked_suites(str(path), stat.st_mtime_ns, stat.st_size).items()}


@functools.lru_cache(maxsize=8)
def _checked_suites(path: str, mtime_ns: int, size: int) -> dict[str, list[ExpectationSpec]]:
    suites = load_yaml(path, SuitesFile).suites
    for name, specs in suites.items():
        for spec in specs:
            try:
                spec.to_gx()
            except Exception as exc:  # GE raises pydantic errors for bad kwargs
                raise ConfigError(f"{path}: suite {name!r}, {spec.label}: {exc}") from exc
    return suites


@dataclass(frozen=True)
class ExpectationOutcome:
    label: str
    type: str
    success: bool
    unexpected_count: int | None  # None for table-level expectations
    observed_value: Any


@dataclass(frozen=True)
class SuiteResult:
    """Great Expectations' verdict on one batch."""

    suite: str
    success: bool
    element_count: int
    outcomes: list[ExpectationOutcome]
    result_json: str  # GE's full validation result, as JSON (plus ``sparkfs_engine``)
    engine: Engine = "spark"  # where GE computed its metrics

    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]


# Great Expectations keeps the context it made last as the process's current one, and a run
# looks its suite up there: one validation at a time (silver tables refine side by side).
_GX_LOCK = threading.Lock()


def _validate(gx: Any, data: Any, suite_name: str, specs: Sequence[ExpectationSpec], engine: Engine) -> Any:
    """GE's result for ``data`` (a Spark or pandas DataFrame) against the suite, in an ephemeral context."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    sources = context.data_sources
    source = sources.add_pandas(name="sparkfs") if engine == "pandas" else sources.add_spark(name="sparkfs")
    batch = source.add_dataframe_asset(name=suite_name).add_batch_definition_whole_dataframe("batch")
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=[s.to_gx() for s in specs]))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=suite, name=f"{suite_name}_validation")
    )
    return definition.run(batch_parameters={"dataframe": data}, result_format="BASIC")


def run_suite(
    df: DataFrame, suite_name: str, specs: Sequence[ExpectationSpec], engine: Engine = "spark"
) -> SuiteResult:
    """Validate ``df`` with Great Expectations against the declared suite; return GE's result.

    Uses an ephemeral GE context (no files, analytics off), a dataframe asset and a
    ``ValidationDefinition``. ``engine="spark"`` validates ``df`` in Spark (cache it first: GE
    computes each metric with its own Spark job); ``engine="pandas"`` collects ``df`` to the driver
    and validates it there, which for a day's few thousand rows takes a second instead of one
    Spark job per metric.

    Example: ``run_suite(candidate_df, "flights", suites["flights"]).failed()``.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    data = df.toPandas() if engine == "pandas" else df
    with _GX_LOCK:
        result = _validate(gx, data, suite_name, specs, engine)
    by_label = {s.label: s for s in specs}
    outcomes = []
    element_count = 0
    for r in result.results:
        config = r.expectation_config
        assert config is not None
        label = (config.meta or {}).get("sparkfs_label", config.type)
        spec = by_label.get(label)
        res = r.result or {}
        element_count = max(element_count, int(res.get("element_count") or 0))
        if r.exception_info and r.exception_info.get("raised_exception"):
            raise SparkfsError(
                f"Great Expectations could not evaluate {label} on suite {suite_name!r}: "
                f"{r.exception_info.get('exception_message')}"
            )
        outcomes.append(
            ExpectationOutcome(
                label=label,
                type=config.type,
                success=bool(r.success),
                # GE reports no unexpected_count for an empty batch: nothing is unexpected there.
                unexpected_count=(
                    int(res.get("unexpected_count") or 0) if spec and spec.is_row_level else None
                ),
                observed_value=res.get("observed_value"),
            )
        )
    order = {s.label: i for i, s in enumerate(specs)}
    outcomes.sort(key=lambda o: order.get(o.label, len(order)))
    return SuiteResult(
        suite=suite_name,
        success=bool(result.success),
        element_count=element_count,
        outcomes=outcomes,
        result_json=json.dumps({**result.to_json_dict(), "sparkfs_engine": engine}, default=str, sort_keys=True),
        engine=engine,
    )


def validate(
    df: DataFrame,
    suite_name: str,
    specs: Sequence[ExpectationSpec],
    row_counts: Mapping[str, int],
    *,
    rows: int,
    pandas_max_rows: int,
) -> SuiteResult:
    """Run the suite with Great Expectations and check that its counts agree with the row flags.

    A batch of at most ``pandas_max_rows`` rows (``rows``: its size) is validated on the driver
    with GE's pandas engine; a bigger one in Spark. The two engines may read an edge case
    differently (a double ``NaN`` is null to pandas, a value to Spark): when the pandas verdict
    disagrees with the row flags, which are Spark's, the batch is validated again in Spark, and only
    a disagreement there is an error (:func:`check_agreement`).

    Example: ``validate(df, "flights", suite, counts, rows=958, pandas_max_rows=100_000).success``.
    """
    if pandas_max_rows > 0 and rows <= pandas_max_rows:
        result = run_suite(df, suite_name, specs, engine="pandas")
        disagree = _disagreements(result, row_counts)
        if not disagree:
            return result
        log.debug("suite %r: GE on pandas disagrees with the row flags (%s); validating in Spark",
                  suite_name, disagree)
    result = run_suite(df, suite_name, specs, engine="spark")
    check_agreement(result, row_counts)
    return result


def _disagreements(result: SuiteResult, row_counts: Mapping[str, int]) -> list[str]:
    return [
        f"{o.label}: Great Expectations counted {o.unexpected_count}, the row flags {row_counts.get(o.label, 0)}"
        for o in result.outcomes
        if o.unexpected_count is not None and o.unexpected_count != row_counts.get(o.label, 0)
    ]


def check_agreement(result: SuiteResult, row_counts: Mapping[str, int]) -> None:
    """Fail when sparkfs' row flags and GE disagree on how many rows an expectation rejects.

    ``row_counts`` maps an expectation's label to the number of rows its :meth:`ExpectationSpec.failed`
    flags. A difference means the quarantine would not match GE's verdict, so nothing is written.
    """
    disagree = _disagreements(result, row_counts)
    if disagree:
        raise SparkfsError(
            f"suite {result.suite!r}: the per-row checks disagree with Great Expectations, so rows "
            f"cannot be quarantined reliably: {disagree}"
        )


def result_row(result: SuiteResult, table_name: str, rows_rejected: int, days: Sequence[date] | None,
               run_id: str) -> dict[str, Any]:
    """GE's verdict on one batch of ``table_name``: a row of ``ops.validation_results``."""
    return {
        "run_id": run_id,
        "table_name": table_name,
        "suite": result.suite,
        "window_start": min(days) if days else None,
        "window_end": max(days) if days else None,
        "validated_at": datetime.now(timezone.utc).replace(tzinfo=None),
        "success": result.success,
        "rows_evaluated": result.element_count,
        "rows_rejected": rows_rejected,
        "failed_expectations": json.dumps({o.label: o.unexpected_count for o in result.failed()}, sort_keys=True),
        "result": result.result_json,
    }


def save_results(lake: Lakehouse, rows: Sequence[dict[str, Any]]) -> None:
    """Append :func:`result_row` rows to ``ops.validation_results``, in one commit (a pipeline run
    saves its silver tables' verdicts together, when it ends)."""
    if not rows:
        return
    layer, table = VALIDATION_TABLE
    if not lake.exists(layer, table):
        lake.create(layer, table, VALIDATION_SCHEMA, properties=APPEND_LOG_PROPERTIES,
                    comment="Great Expectations results of every silver validation")
    else:  # a table from an earlier sparkfs may lack the compaction
        lake.ensure_properties(layer, table, APPEND_LOG_PROPERTIES)
    append_rows(lake, layer, table, list(rows), VALIDATION_SCHEMA)
