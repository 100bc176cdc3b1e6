package dev.vigil.flink.decode;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The parts of a topic's Avro schema that decoding needs, read as connectors/avro_serde.py reads
 * them: each field's base type, nullability and logical type ({@code field_type}), its union
 * branches in writer order, the entity/time/label roles, the feature columns
 * ({@code feature_columns}), the payload format ({@code vigil.format}) and confluent id.
 */
public final class RecordSchema {
    /** Avro primitive types a field may have (connectors.flink_kafka's mapping). */
    public enum Base { STRING, DOUBLE, FLOAT, INT, LONG, BOOLEAN, BYTES, NULL }

    public static final class Field {
        public final String name;
        public final Base base;
        public final boolean nullable;
        public final String logical;
        /** The writer's union branches (null as Base.NULL), or null for a plain type. */
        public final List<Base> branches;

        Field(String name, Base base, boolean nullable, String logical, List<Base> branches) {
            this.name = name;
            this.base = base;
            this.nullable = nullable;
            this.logical = logical;
            this.branches = branches;
        }

        public boolean isTimestamp() {
            return "timestamp-millis".equals(logical);
        }
    }

    public final String name;
    public final String format;
    /** {@code vigil.confluent_id} as given (a number or a string), or null. */
    public final Object confluentId;
    public final List<Field> fields;
    public final String entity;
    public final Set<String> features;

    private RecordSchema(String name, String format, Object confluentId, List<Field> fields, String entity,
                         Set<String> features) {
        this.name = name;
        this.format = format;
        this.confluentId = confluentId;
        this.fields = fields;
        this.entity = entity;
        this.features = features;
    }

    private static Base base(String type, String field) {
        switch (type) {
            case "string": return Base.STRING;
            case "double": return Base.DOUBLE;
            case "float": return Base.FLOAT;
            case "int": return Base.INT;
            case "long": return Base.LONG;
            case "boolean": return Base.BOOLEAN;
            case "bytes": return Base.BYTES;
            case "null": return Base.NULL;
            default:
                throw new IllegalArgumentException("field " + PyText.reprStr(field) + ": Avro type " + type
                        + " is not supported");
        }
    }

    /** The schema from its JSON (a dict as connectors.avro_serde.load_schema gives it). */
    @SuppressWarnings("unchecked")
    public static RecordSchema parse(Map<String, Object> schema) {
        if (!"record".equals(schema.get("type"))) {
            throw new IllegalArgumentException("an Avro schema of type 'record' is required");
        }
        String format = (String) schema.getOrDefault("vigil.format", "avro");
        if (!format.equals("avro") && !format.equals("confluent") && !format.equals("json")) {
            throw new IllegalArgumentException("schema " + PyText.reprStr(String.valueOf(schema.get("name")))
                    + ": vigil.format must be one of ('avro', 'confluent', 'json'), got " + PyText.reprStr(format));
        }
        Object entity = schema.get("vigil.entity");
        Set<String> special = new HashSet<>();
        for (String role : new String[] {"vigil.entity", "vigil.time", "vigil.label"}) {
            if (schema.get(role) instanceof String) {
                special.add((String) schema.get(role));
            }
        }
        List<Field> fields = new ArrayList<>();
        Set<String> features = new java.util.LinkedHashSet<>();
        for (Object item : (List<Object>) schema.get("fields")) {
            Map<String, Object> f = (Map<String, Object>) item;
            String fname = (String) f.get("name");
            Object t = f.get("type");
            boolean nullable = false;
            List<Object> union = null;
            if (t instanceof List) {
                union = (List<Object>) t;
                List<Object> nonNull = new ArrayList<>();
                for (Object x : union) {
                    if (!"null".equals(x)) {
                        nonNull.add(x);
                    }
                }
                if (nonNull.size() != 1) {
                    throw new IllegalArgumentException("field " + PyText.reprStr(fname)
                            + ": only [\"null\", T] unions are supported");
                }
                nullable = union.contains("null");
                t = nonNull.get(0);
            }
            String logical = null;
            String typeName;
            if (t instanceof Map) {
                typeName = (String) ((Map<String, Object>) t).get("type");
                logical = (String) ((Map<String, Object>) t).get("logicalType");
            } else {
                typeName = (String) t;
            }
            Base b = base(typeName, fname);
            if (logical != null && !(logical.equals("timestamp-millis") && b == Base.LONG)) {
                throw new IllegalArgumentException("field " + PyText.reprStr(fname) + ": Avro type " + typeName + "/"
                        + logical + " is not supported");
            }
            List<Base> branches = null;
            if (union != null) {
                branches = new ArrayList<>();
                for (Object x : union) {
                    branches.add("null".equals(x) ? Base.NULL : b);
                }
                branches = Collections.unmodifiableList(branches);
            }
            fields.add(new Field(fname, b, nullable, logical, branches));
            boolean numeric = b == Base.DOUBLE || b == Base.FLOAT || b == Base.INT || b == Base.LONG;
            if (!special.contains(fname) && numeric && logical == null) {
                features.add(fname);
            }
        }
        return new RecordSchema((String) schema.get("name"), format, schema.get("vigil.confluent_id"),
                Collections.unmodifiableList(fields), entity instanceof String ? (String) entity : null,
                Collections.unmodifiableSet(features));
    }
}
