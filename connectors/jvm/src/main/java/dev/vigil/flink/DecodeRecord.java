package dev.vigil.flink;

import dev.vigil.flink.decode.PyJson;
import dev.vigil.flink.decode.Pseudonyms;
import dev.vigil.flink.decode.RecordSchema;
import dev.vigil.flink.decode.TelemetryDecoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.apache.flink.metrics.Counter;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.catalog.DataTypeFactory;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.TableFunction;
import org.apache.flink.table.functions.SpecializedFunction;
import org.apache.flink.table.functions.UserDefinedFunction;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.inference.CallContext;
import org.apache.flink.table.types.inference.InputTypeStrategies;
import org.apache.flink.table.types.inference.TypeInference;

/**
 * {@code VIGIL_DECODE(payload, schema_header, spec)}: a raw Kafka record's value and its
 * {@code vigil.schema} header -> one row (the schema's fields with the entity as
 * {@code <entity>_pseudonym}, all nullable; {@code error} STRING), the row
 * udfs/preprocess.DecodeTelemetry returns, with the same decisions and reasons. Never throws for
 * a record: a bad one is a row with every value null and the reason in {@code error}.
 *
 * <p>A table function (used with a lateral join) so that it runs once per record: a scalar
 * function returning a ROW is called again for every field read of its result once the
 * planner merges the projections, as it does for the Table API's {@code select(...).select(d.a, d.b)}.
 * It emits one row with one column, {@code d}, the decoded row: later projections read its
 * fields from the join's output like any column's.
 *
 * <p>{@code spec} is a literal JSON object {@code {"schema": <the Avro schema>, "schema_id":
 * "<name>@<fingerprint>", "secret_file": "<path>" | null}} (jobs/core/jvm_decode.py writes it).
 * It fixes the result type when the job is planned, and the planner then specializes the
 * function to it. The pseudonymisation secret never travels with the job: each task reads it in
 * {@link #open} ({@code VIGIL_PSEUDONYM_SECRET} in the TaskManager's environment, else the file).
 */
public final class DecodeRecord extends TableFunction<RowData> implements SpecializedFunction {
    private static final long serialVersionUID = 1L;
    private static final int SPEC = 2;
    /** The name of the one column the function emits (the decoded row). */
    public static final String COLUMN = "d";

    private final String spec;
    private transient TelemetryDecoder decoder;
    private transient int width;
    private transient boolean[] timestamps;
    private transient Counter deadLetters;

    public DecodeRecord() {
        this(null);
    }

    private DecodeRecord(String spec) {
        this.spec = spec;
    }

    /** The parsed spec: schema, its id and the secret file. */
    static final class Spec {
        final RecordSchema schema;
        final String schemaId;
        final String secretFile;

        @SuppressWarnings("unchecked")
        Spec(String json) {
            Object parsed = PyJson.parseTrusted(json);
            if (!(parsed instanceof Map)) {
                throw new IllegalArgumentException("the spec must be a JSON object");
            }
            Map<String, Object> m = (Map<String, Object>) parsed;
            if (!(m.get("schema") instanceof Map) || !(m.get("schema_id") instanceof String)) {
                throw new IllegalArgumentException("the spec needs \"schema\" (an object) and \"schema_id\" (a string)");
            }
            this.schema = RecordSchema.parse((Map<String, Object>) m.get("schema"));
            this.schemaId = (String) m.get("schema_id");
            this.secretFile = m.get("secret_file") instanceof String ? (String) m.get("secret_file") : null;
            if (schema.entity != null) {
                for (RecordSchema.Field f : schema.fields) {
                    if (f.name.equals(schema.entity) && f.base != RecordSchema.Base.STRING) {
                        throw new IllegalArgumentException("the entity column " + f.name + " must be a string "
                                + "(its pseudonym is one)");
                    }
                }
            }
        }

        DataType rowType() {
            List<DataTypes.Field> fields = new ArrayList<>();
            for (RecordSchema.Field f : schema.fields) {
                String name = f.name.equals(schema.entity) ? f.name + "_pseudonym" : f.name;
                fields.add(DataTypes.FIELD(name, flinkType(f).nullable()));
            }
            fields.add(DataTypes.FIELD("error", DataTypes.STRING()));
            // a logical type only: the columns read from it keep their default conversion classes
            return DataTypes.ROW(fields);
        }

        /** What the function emits: one row whose one column {@code d} is the decoded row. */
        DataType emittedType() {
            return DataTypes.ROW(DataTypes.FIELD(COLUMN, rowType())).bridgedTo(RowData.class);
        }

        private static DataType flinkType(RecordSchema.Field f) {
            if (f.isTimestamp()) {
                return DataTypes.TIMESTAMP(3);
            }
            switch (f.base) {
                case STRING: return DataTypes.STRING();
                case DOUBLE: return DataTypes.DOUBLE();
                case FLOAT: return DataTypes.FLOAT();
                case INT: return DataTypes.INT();
                case LONG: return DataTypes.BIGINT();
                case BOOLEAN: return DataTypes.BOOLEAN();
                case BYTES: return DataTypes.BYTES();
                default: throw new IllegalArgumentException("field " + f.name + ": no Flink type for " + f.base);
            }
        }
    }

    private static String specOf(CallContext context) {
        if (!context.isArgumentLiteral(SPEC)) {
            throw new ValidationException("VIGIL_DECODE's third argument (the spec) must be a literal");
        }
        return context.getArgumentValue(SPEC, String.class)
                .orElseThrow(() -> new ValidationException("VIGIL_DECODE's spec is null"));
    }

    private static Spec parse(String json) {
        try {
            return new Spec(json);
        } catch (IllegalArgumentException e) {
            throw new ValidationException("VIGIL_DECODE: " + e.getMessage(), e);
        }
    }

    @Override
    public TypeInference getTypeInference(DataTypeFactory typeFactory) {
        return TypeInference.newBuilder()
                .inputTypeStrategy(InputTypeStrategies.sequence(
                        InputTypeStrategies.explicit(DataTypes.BYTES()),
                        InputTypeStrategies.explicit(DataTypes.BYTES()),
                        InputTypeStrategies.and(InputTypeStrategies.LITERAL,
                                InputTypeStrategies.explicit(DataTypes.STRING()))))
                .outputTypeStrategy(context -> Optional.of(parse(specOf(context)).emittedType()))
                .build();
    }

    @Override
    public UserDefinedFunction specialize(SpecializedContext context) {
        String json = specOf(context.getCallContext());
        parse(json);  // fails at planning, not in a task
        return new DecodeRecord(json);
    }

    @Override
    public void open(FunctionContext context) throws Exception {
        if (spec == null) {
            throw new IllegalStateException("VIGIL_DECODE was not specialized by the planner");
        }
        Spec parsed = parse(spec);
        byte[] secret = Pseudonyms.readSecret(parsed.secretFile, System.getenv());
        decoder = new TelemetryDecoder(parsed.schema, parsed.schemaId, secret);
        width = parsed.schema.fields.size();
        timestamps = new boolean[width];
        for (int i = 0; i < width; i++) {
            timestamps[i] = parsed.schema.fields.get(i).isTimestamp();
        }
        deadLetters = context.getMetricGroup().addGroup("vigil").counter("dead_letters");
    }

    public void eval(byte[] payload, byte[] schemaHeader, String specArgument) {
        TelemetryDecoder.Decoded d = decoder.decode(payload, schemaHeader);
        GenericRowData row = new GenericRowData(width + 1);
        Object[] values = d.values;
        for (int i = 0; i < width; i++) {
            Object v = values[i];
            if (v == null) {
                continue;
            }
            if (timestamps[i]) {
                row.setField(i, TimestampData.fromEpochMillis((Long) v));
            } else if (v instanceof String) {
                row.setField(i, StringData.fromString((String) v));
            } else {
                row.setField(i, v);
            }
        }
        if (d.error != null) {
            row.setField(width, StringData.fromBytes(d.error.getBytes(StandardCharsets.UTF_8)));
            deadLetters.inc();
        }
        collect(GenericRowData.of(row));
    }
}
