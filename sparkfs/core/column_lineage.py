"""Column-level lineage: which columns of which sparkfs tables each written column is computed from.

OpenLineage's ``columnLineage`` facet (sent by :mod:`sparkfs.core.openlineage`) lists, for each
output column, the input columns that fed it and how: DIRECT (the value is derived from the
input: IDENTITY, TRANSFORMATION or AGGREGATION) or INDIRECT (the input decides which rows or
windows count, not the value: WINDOW, CONDITIONAL, ...). sparkfs knows this in two ways, which
its writers join column by column:

- its own steps are declared, so the writer states them (:func:`then`, :func:`indirect`): a
  feature table's rolling aggregates (:mod:`sparkfs.features.column_lineage`), the model that
  scores the predictions;
- the code a project plugs in (a feature table's builder, the inference spine) is read off
  Spark's analyzed plan (:func:`plan_column_inputs`): each column traced through projections,
  filters, joins and aggregates down to the columns of the sparkfs tables the plan reads. The plan
  is what Spark computes, so this is the code's lineage, not a reading of its source.

A column whose origin is not known exactly is left out, not guessed: one computed from a source
that is not a sparkfs table (a DataFrame made in memory, a file read directly), from a window
function or subquery in the plugged-in code, or below a union or grouping set (whose columns mix
several inputs by position); so is every column when the plan cannot be read (Spark Connect, as on
Databricks serverless, has no analyzed plan to read from Python).

Example::

    plan_column_inputs(lake, lake.read("silver", "flights").select(F.col("dep_delay").alias("d")))
    # {"d": (ColumnInput("silver.flights", "dep_delay"),)}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sparkfs.core.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from sparkfs.core.lakehouse import Lakehouse

log = logging.getLogger(__name__)

DIRECT, INDIRECT = "DIRECT", "INDIRECT"
IDENTITY, TRANSFORMATION, AGGREGATION = "IDENTITY", "TRANSFORMATION", "AGGREGATION"
WINDOW, CONDITIONAL = "WINDOW", "CONDITIONAL"
# Two direct steps in a row are the stronger of the two (OpenLineage's rule for its Spark integration).
_DIRECT_ORDER = (IDENTITY, TRANSFORMATION, AGGREGATION)
# Plan nodes whose output columns take values from several inputs by position, under the ids of
# the first input's columns: following ids through them would name one input and hide the others.
_POSITIONAL = {"Union", "UnionLoop", "Expand"}
# Expressions whose inputs are not the columns of the row they are in.
_OPAQUE = ("WindowExpression", "Subquery", "Exists", "ListQuery", "OuterReference", "LateralColumnAliasReference")


@dataclass(frozen=True)
class ColumnInput:
    """Column ``column`` of ``source`` (a ``layer.table`` node) fed an output column: ``type``
    DIRECT or INDIRECT, ``subtype`` as OpenLineage names it, and what was done, when sparkfs
    declares it."""

    source: str
    column: str
    type: str = DIRECT
    subtype: str = IDENTITY
    description: str | None = None


# An output column -> what fed it; a column that is not a key is not known.
ColumnLineage = Mapping[str, tuple[ColumnInput, ...]]


def then(inputs: Iterable[ColumnInput], subtype: str, description: str | None = None) -> tuple[ColumnInput, ...]:
    """``inputs`` after one more direct step of ``subtype``: a direct input takes the stronger
    subtype (and the step's description when the step's is the stronger or equal one); an
    indirect input stays as it is."""
    out = []
    for i in inputs:
        if i.type == DIRECT and _DIRECT_ORDER.index(subtype) >= _DIRECT_ORDER.index(i.subtype):
            i = replace(i, subtype=subtype, description=description or i.description)
        out.append(i)
    return tuple(dict.fromkeys(out))


def indirect(inputs: Iterable[ColumnInput], subtype: str, description: str | None = None) -> tuple[ColumnInput, ...]:
    """``inputs`` as INDIRECT inputs of ``subtype`` (e.g. the columns a window is partitioned and ordered by)."""
    return tuple(dict.fromkeys(replace(i, type=INDIRECT, subtype=subtype, description=description) for i in inputs))


def plan_column_inputs(lake: Lakehouse, df: DataFrame) -> dict[str, tuple[ColumnInput, ...] | None]:
    """Each column of ``df`` with the sparkfs table columns it is computed from (None: not known
    exactly, see the module's text); empty when the plan cannot be read. Reads the plan only:
    no Spark job runs."""
    jdf: Any = getattr(df, "_jdf", None)  # a classic DataFrame's JVM side; Spark Connect has none
    if jdf is None:
        return {}
    try:
        plan = jdf.queryExecution().analyzed()
        output = plan.output()
        columns = [(output.apply(i).name(), output.apply(i).exprId().id()) for i in range(output.size())]
        tree, _ = _tree(json.loads(plan.toJSON()))
        origins = _PlanOrigins(lake)
        origins.walk(tree)
    except _Unreadable as exc:
        log.debug("column lineage not read from the plan: %s", exc)
        return {}
    except Exception as exc:  # a plan this Spark cannot serialise: lineage is a bonus, the write is not
        log.debug("column lineage not read from the plan (%s: %s)", type(exc).__name__, exc)
        return {}
    return {name: origins.known.get(int(expr_id)) for name, expr_id in columns}


class _Unreadable(Exception):
    """The plan, or one column of it, cannot be traced exactly."""


_Tree = tuple[dict[str, Any], list[Any]]


def _tree(flat: list[dict[str, Any]], at: int = 0) -> tuple[_Tree, int]:
    """A plan or expression tree from Spark's JSON form: nodes in pre-order, each followed by its
    ``num-children`` subtrees."""
    node, children, at = flat[at], [], at + 1
    for _ in range(node["num-children"]):
        child, at = _tree(flat, at)
        children.append(child)
    return (node, children), at


def _short(node: Mapping[str, Any]) -> str:
    return str(node["class"]).rsplit(".", 1)[-1]


def _expressions(value: Any) -> Iterator[_Tree]:
    """The expression trees in one field of a plan node: an expression is a list of nodes, a
    sequence of expressions a list of such lists; anything else (a child's index, names,
    options) holds none."""
    if isinstance(value, list) and value:
        if isinstance(value[0], dict) and "class" in value[0] and "num-children" in value[0]:
            yield _tree(value)[0]
        else:
            for item in value:
                yield from _expressions(item)


@dataclass
class _PlanOrigins:
    """Walks a plan bottom-up, recording for each column id (Spark's ``exprId``) what fed it."""

    lake: Lakehouse
    known: dict[int, tuple[ColumnInput, ...] | None] = field(default_factory=dict)

    def walk(self, tree: _Tree) -> None:
        node, children = tree
        for child in children:
            self.walk(child)
        name = _short(node)
        if name in _POSITIONAL:
            raise _Unreadable(f"the plan has a {name}")
        if name == "SubqueryAlias" and len(children) == 1 and not children[0][1] and "output" in children[0][0]:
            self._table_columns(node, children[0][0])
        for key, value in node.items():
            if key in ("class", "num-children", "output"):
                continue
            for expression in _expressions(value):
                if _short(expression[0]) == "Alias":
                    self.known[_expr_id(expression[0])] = self._derived(expression[1][0])

    def _table_columns(self, alias: Mapping[str, Any], relation: Mapping[str, Any]) -> None:
        """The columns of a table read by name (a relation right under the alias Spark names it by)."""
        identifier = alias.get("identifier") or {}
        schema = str(identifier.get("qualifier", "")).strip("[]").split(", ")[-1]
        if not schema:  # an alias the code gave, not a table's name
            return
        try:
            layer, table = self.lake.resolve(f"{schema}.{identifier.get('name', '')}")
        except ConfigError:  # not a sparkfs schema: its columns stay unknown
            return
        for attribute in _expressions(relation["output"]):
            node = attribute[0]
            self.known[_expr_id(node)] = (ColumnInput(f"{layer}.{table}", node["name"]),)

    def _derived(self, expression: _Tree) -> tuple[ColumnInput, ...] | None:
        try:
            return tuple(dict.fromkeys(self._inputs(expression, IDENTITY)))
        except _Unreadable:
            return None

    def _inputs(self, expression: _Tree, subtype: str) -> list[ColumnInput]:
        node, children = expression
        name = _short(node)
        if name == "AttributeReference":
            origin = self.known.get(_expr_id(node))
            if origin is None:
                raise _Unreadable(f"column {node.get('name')} comes from no sparkfs table")
            return list(then(origin, subtype))
        if any(opaque in name for opaque in _OPAQUE):
            raise _Unreadable(name)
        if name == "Alias":
            return self._inputs(children[0], subtype)
        step = AGGREGATION if name == "AggregateExpression" else max(subtype, TRANSFORMATION, key=_DIRECT_ORDER.index)
        conditions: set[int] = set()
        if name == "If":
            conditions = {0}
        elif name == "CaseWhen":  # children: condition, value, condition, value, ... [, else]
            conditions = set(range(0, 2 * (len(children) // 2), 2))
        out: list[ColumnInput] = []
        for i, child in enumerate(children):
            found = self._inputs(child, step)
            out += indirect(found, CONDITIONAL) if i in conditions else found
        return out


def _expr_id(node: Mapping[str, Any]) -> int:
    return int(node["exprId"]["id"])
