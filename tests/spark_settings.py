"""How every Spark driver the tests start is set up: the shared session (``conftest.py``) and the
jobs that run as processes of their own (``test_faults.py``)."""

from __future__ import annotations

# Room for the JIT's code (Spark + Delta is a lot of it) and a throughput collector.
JAVA_OPTIONS = "-XX:ReservedCodeCacheSize=512m -XX:+UseParallelGC"

# A job run as a process of its own lives a minute or less on a few rows, and most of a young
# JVM's CPU goes to the JIT compiler (a Flight Recorder profile says so). Inlining less and leaving
# to C2 only code 4x hotter than its default bar makes such a JVM cheaper; the shared session,
# warm after its first minutes, ran its later modules slower with them, so it keeps the defaults.
# The measurements are in docs/benchmarks.md, "The test suite". The jobs themselves keep the
# JVM's defaults.
SHORT_LIVED_JAVA_OPTIONS = (
    f"{JAVA_OPTIONS} -XX:FreqInlineSize=60 -XX:InlineSmallCode=600 -XX:MaxInlineSize=20 "
    "-XX:Tier4InvocationThreshold=20000 -XX:Tier4MinInvocationThreshold=2400 "
    "-XX:Tier4CompileThreshold=60000 -XX:Tier4BackEdgeThreshold=160000"
)

SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # Compiling Spark's generated code (whole-stage and per expression) for a few rows costs more
    # than it saves, about a third of the suite's time. `make demo` and the benchmarks run
    # Spark's defaults.
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    # pyspark's DataFrame debugging records the Python line behind each column expression: 13
    # calls into the JVM for an `F.col` instead of 3. A failing test's traceback names the line.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}
