package sparkfs.monitoring;

import java.io.Serializable;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.spark.broadcast.Broadcast;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.analysis.FunctionRegistry;
import org.apache.spark.sql.catalyst.expressions.BoundReference;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.aggregate.ImperativeAggregate;
import org.apache.spark.sql.catalyst.expressions.aggregate.TypedImperativeAggregate;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.unsafe.types.UTF8String;

import scala.collection.immutable.IndexedSeq;
import scala.collection.immutable.Seq;
import scala.reflect.ClassTag$;
import scala.runtime.AbstractFunction1;

/**
 * Every count a chunk's drift needs, as one Spark aggregate: the JVM engine of day_counts.py,
 * counting the same buckets with the same arithmetic as its Python engine (the tests compare
 * the two array for array). Each row is read once, in the task that scans it, with no Python
 * worker and no copy of the row to Arrow.
 *
 * Children: the numeric columns as doubles, then the categorical ones as strings. The result is
 * one binary value (little-endian): the rows; per numeric column its bins (nulls first) and its
 * KS buckets; per categorical column its nulls, the number of values, then per value its UTF-8
 * length, bytes and rows. The grids arrive as bytes (day_counts.py's _grid_bytes) and are
 * broadcast once per executor: an exact KS grid holds up to 10,000 values per column.
 *
 * Built against Spark's Catalyst API (TypedImperativeAggregate) of the pinned pyspark, by
 * sparkfs/core/jvm.py; where the jar is not on the driver's classpath (Databricks, Spark
 * Connect, a spark-submit without --jars), day_counts.py counts with its Python engine.
 */
public final class DayCountsAggregate extends TypedImperativeAggregate<DayCountsAggregate.Counts>
        implements Serializable {
    private static final long serialVersionUID = 1L;

    /** What every row is counted against: the profile's bin edges and each column's KS grid. */
    public static final class Grids implements Serializable {
        private static final long serialVersionUID = 1L;
        final double[][] edges;    // per numeric column: the profile's bin edges, ascending
        final double[][] values;   // per numeric column: the exact grid's distinct values, or null
        final double[][] cells;    // per numeric column: the cells' edges (np.linspace), or null
        final int categorical;

        Grids(double[][] edges, double[][] values, double[][] cells, int categorical) {
            this.edges = edges;
            this.values = values;
            this.cells = cells;
            this.categorical = categorical;
        }

        int ksSize(int i) {
            if (values[i] != null) return 2 * values[i].length + 1;
            if (cells[i] != null) return cells[i].length + 1;  // below, each cell, above
            return 0;
        }

        /** Parsed from what day_counts.py's _grid_bytes wrote. */
        static Grids parse(byte[] bytes) {
            ByteBuffer in = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
            int numeric = in.getInt();
            int categorical = in.getInt();
            double[][] edges = new double[numeric][];
            double[][] values = new double[numeric][];
            double[][] cells = new double[numeric][];
            for (int i = 0; i < numeric; i++) {
                edges[i] = doubles(in);
                int kind = in.getInt();
                if (kind == 1) values[i] = doubles(in);
                else if (kind == 2) cells[i] = doubles(in);
            }
            return new Grids(edges, values, cells, categorical);
        }

        private static double[] doubles(ByteBuffer in) {
            double[] out = new double[in.getInt()];
            in.asDoubleBuffer().get(out);
            in.position(in.position() + 8 * out.length);
            return out;
        }
    }

    /** One chunk's counts so far. */
    public static final class Counts {
        long rows;
        final long[][] bins;
        final long[][] ks;
        final long[] categoryNulls;
        final List<Map<UTF8String, long[]>> categories;

        Counts(Grids grids) {
            int numeric = grids.edges.length;
            bins = new long[numeric][];
            ks = new long[numeric][];
            for (int i = 0; i < numeric; i++) {
                bins[i] = new long[grids.edges[i].length + 2];
                ks[i] = new long[grids.ksSize(i)];
            }
            categoryNulls = new long[grids.categorical];
            categories = new ArrayList<>(grids.categorical);
            for (int j = 0; j < grids.categorical; j++) categories.add(new HashMap<>());
        }
    }

    private final Seq<Expression> children;
    private final Broadcast<Grids> grids;
    private final int mutableAggBufferOffset;
    private final int inputAggBufferOffset;
    private transient int[] ordinals;  // each child's column in the input row, where it is one
    private transient Grids cached;    // the broadcast's value: Broadcast.value() locks

    public DayCountsAggregate(Seq<Expression> children, Broadcast<Grids> grids, int mutableAggBufferOffset,
                              int inputAggBufferOffset) {
        this.children = children;
        this.grids = grids;
        this.mutableAggBufferOffset = mutableAggBufferOffset;
        this.inputAggBufferOffset = inputAggBufferOffset;
    }

    /**
     * Registers the aggregate as the session's temporary function {@code name}, counting against
     * {@code gridBytes}; {@link #drop} removes it and its broadcast.
     */
    public static void register(SparkSession spark, String name, byte[] gridBytes) {
        Broadcast<Grids> shared = spark.sparkContext().broadcast(Grids.parse(gridBytes), ClassTag$.MODULE$.apply(Grids.class));
        registry(spark).createOrReplaceTempFunction(name, new Builder(shared), "java_udf");
        BROADCASTS.put(name, shared);
    }

    public static void drop(SparkSession spark, String name) {
        FunctionRegistry registry = registry(spark);
        // Registered under the name, listed (and dropped) under its qualified identifier.
        scala.collection.Iterator<FunctionIdentifier> found = registry.listFunction().iterator();
        while (found.hasNext()) {
            FunctionIdentifier id = found.next();
            if (id.funcName().equals(name)) registry.dropFunction(id);
        }
        Broadcast<Grids> shared = BROADCASTS.remove(name);
        if (shared != null) shared.destroy();
    }

    private static FunctionRegistry registry(SparkSession spark) {
        return ((org.apache.spark.sql.classic.SparkSession) spark).sessionState().functionRegistry();
    }

    private static final Map<String, Broadcast<Grids>> BROADCASTS = new ConcurrentHashMap<>();

    private static final class Builder extends AbstractFunction1<Seq<Expression>, Expression> implements Serializable {
        private static final long serialVersionUID = 1L;
        private final Broadcast<Grids> grids;

        Builder(Broadcast<Grids> grids) {
            this.grids = grids;
        }

        @Override
        public Expression apply(Seq<Expression> children) {
            return new DayCountsAggregate(children, grids, 0, 0);
        }
    }

    // --- counting ---------------------------------------------------------------------------

    @Override
    public Counts createAggregationBuffer() {
        return new Counts(grids());
    }

    @Override
    public Counts update(Counts counts, InternalRow row) {
        Grids g = grids();
        int[] at = ordinals();
        counts.rows++;
        int numeric = g.edges.length;
        for (int i = 0; i < numeric; i++) {
            double x;
            if (at[i] >= 0) {
                if (row.isNullAt(at[i])) {
                    counts.bins[i][0]++;
                    continue;
                }
                x = row.getDouble(at[i]);
            } else {
                Object v = children.apply(i).eval(row);
                if (v == null) {
                    counts.bins[i][0]++;
                    continue;
                }
                x = (Double) v;
            }
            if (Double.isNaN(x)) {
                counts.bins[i][0]++;
                continue;
            }
            counts.bins[i][1 + below(g.edges[i], x)]++;
            if (g.values[i] != null) {
                double[] u = g.values[i];
                int left = below(u, x);
                counts.ks[i][2 * left + (left < u.length && u[left] == x ? 1 : 0)]++;
            } else if (g.cells[i] != null) {
                counts.ks[i][cell(g.cells[i], x)]++;
            }
        }
        for (int j = 0; j < g.categorical; j++) {
            int c = numeric + j;
            UTF8String value;
            if (at[c] >= 0) {
                value = row.isNullAt(at[c]) ? null : row.getUTF8String(at[c]);
            } else {
                value = (UTF8String) children.apply(c).eval(row);
            }
            if (value == null) {
                counts.categoryNulls[j]++;
                continue;
            }
            long[] n = counts.categories.get(j).get(value);
            if (n == null) counts.categories.get(j).put(value.copy(), new long[] {1});
            else n[0]++;
        }
        return counts;
    }

    /** How many of the ascending {@code sorted} are strictly below {@code x} (numpy's searchsorted, side left). */
    static int below(double[] sorted, double x) {
        int lo = 0, hi = sorted.length;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (sorted[mid] < x) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }

    /**
     * {@code x}'s bucket on equal-width cells with {@code edges} (np.linspace's): 0 below the first
     * edge, 1 + the cell as np.histogram's fast path computes it (right-open, the last closed), or
     * the last bucket above the last edge.
     */
    static int cell(double[] edges, double x) {
        int n = edges.length - 1;
        double first = edges[0], last = edges[n];
        if (x < first) return 0;
        if (x > last) return n + 1;
        int index = (int) (((x - first) / (last - first)) * n);
        if (index == n) index--;
        if (x < edges[index]) index--;
        if (x >= edges[index + 1] && index != n - 1) index++;
        return index + 1;
    }

    private Grids grids() {
        Grids g = cached;
        if (g == null) {
            g = grids.value();
            cached = g;
        }
        return g;
    }

    private int[] ordinals() {
        int[] at = ordinals;
        if (at == null) {
            at = new int[children.size()];
            for (int i = 0; i < at.length; i++) {
                Expression child = children.apply(i);
                at[i] = child instanceof BoundReference ? ((BoundReference) child).ordinal() : -1;
            }
            ordinals = at;
        }
        return at;
    }

    @Override
    public Counts merge(Counts into, Counts other) {
        into.rows += other.rows;
        for (int i = 0; i < into.bins.length; i++) {
            add(into.bins[i], other.bins[i]);
            add(into.ks[i], other.ks[i]);
        }
        for (int j = 0; j < into.categoryNulls.length; j++) {
            into.categoryNulls[j] += other.categoryNulls[j];
            Map<UTF8String, long[]> target = into.categories.get(j);
            for (Map.Entry<UTF8String, long[]> e : other.categories.get(j).entrySet()) {
                long[] n = target.get(e.getKey());
                if (n == null) target.put(e.getKey(), e.getValue());
                else n[0] += e.getValue()[0];
            }
        }
        return into;
    }

    private static void add(long[] into, long[] other) {
        for (int k = 0; k < into.length; k++) into[k] += other[k];
    }

    @Override
    public Object eval(Counts counts) {
        return serialize(counts);
    }

    @Override
    public byte[] serialize(Counts counts) {
        int size = 8;
        for (int i = 0; i < counts.bins.length; i++) size += 8 * (counts.bins[i].length + counts.ks[i].length);
        for (int j = 0; j < counts.categoryNulls.length; j++) {
            size += 12;
            for (UTF8String value : counts.categories.get(j).keySet()) size += 12 + value.numBytes();
        }
        ByteBuffer out = ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(counts.rows);
        for (int i = 0; i < counts.bins.length; i++) {
            for (long n : counts.bins[i]) out.putLong(n);
            for (long n : counts.ks[i]) out.putLong(n);
        }
        for (int j = 0; j < counts.categoryNulls.length; j++) {
            Map<UTF8String, long[]> found = counts.categories.get(j);
            out.putLong(counts.categoryNulls[j]);
            out.putInt(found.size());
            for (Map.Entry<UTF8String, long[]> e : found.entrySet()) {
                out.putInt(e.getKey().numBytes());
                out.put(e.getKey().getBytes());
                out.putLong(e.getValue()[0]);
            }
        }
        return out.array();
    }

    @Override
    public Counts deserialize(byte[] bytes) {
        Counts counts = createAggregationBuffer();
        ByteBuffer in = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        counts.rows = in.getLong();
        for (int i = 0; i < counts.bins.length; i++) {
            for (int k = 0; k < counts.bins[i].length; k++) counts.bins[i][k] = in.getLong();
            for (int k = 0; k < counts.ks[i].length; k++) counts.ks[i][k] = in.getLong();
        }
        for (int j = 0; j < counts.categoryNulls.length; j++) {
            counts.categoryNulls[j] = in.getLong();
            int values = in.getInt();
            for (int v = 0; v < values; v++) {
                byte[] value = new byte[in.getInt()];
                in.get(value);
                counts.categories.get(j).put(UTF8String.fromBytes(value), new long[] {in.getLong()});
            }
        }
        return counts;
    }

    // --- what Catalyst needs of an expression -----------------------------------------------

    @Override
    public Seq<Expression> children() {
        return children;
    }

    @Override
    public Expression withNewChildrenInternal(IndexedSeq<Expression> newChildren) {
        return new DayCountsAggregate(newChildren, grids, mutableAggBufferOffset, inputAggBufferOffset);
    }

    @Override
    public int mutableAggBufferOffset() {
        return mutableAggBufferOffset;
    }

    @Override
    public int inputAggBufferOffset() {
        return inputAggBufferOffset;
    }

    @Override
    public ImperativeAggregate withNewMutableAggBufferOffset(int offset) {
        return new DayCountsAggregate(children, grids, offset, inputAggBufferOffset);
    }

    @Override
    public ImperativeAggregate withNewInputAggBufferOffset(int offset) {
        return new DayCountsAggregate(children, grids, mutableAggBufferOffset, offset);
    }

    @Override
    public boolean nullable() {
        return false;
    }

    @Override
    public DataType dataType() {
        return DataTypes.BinaryType;
    }

    @Override
    public String prettyName() {
        return "sparkfs_day_counts";
    }

    @Override
    public int productArity() {
        return 4;
    }

    @Override
    public Object productElement(int n) {
        switch (n) {
            case 0: return children;
            case 1: return grids;
            case 2: return mutableAggBufferOffset;
            case 3: return inputAggBufferOffset;
            default: throw new IndexOutOfBoundsException(String.valueOf(n));
        }
    }

    @Override
    public boolean canEqual(Object other) {
        return other instanceof DayCountsAggregate;
    }

    @Override
    public boolean equals(Object other) {
        if (!(other instanceof DayCountsAggregate)) return false;
        DayCountsAggregate that = (DayCountsAggregate) other;
        return children.equals(that.children) && grids.id() == that.grids.id()
                && mutableAggBufferOffset == that.mutableAggBufferOffset
                && inputAggBufferOffset == that.inputAggBufferOffset;
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(new Object[] {children, grids.id(), mutableAggBufferOffset, inputAggBufferOffset});
    }
}
