package dev.vigil.flink.decode;

import java.math.BigInteger;
import java.util.List;

/**
 * One raw record -> the decoded row, as udfs/preprocess.DecodeTelemetry decides it (without Flink,
 * so it is testable alone): the schema's values with the entity id replaced by its pseudonym, and
 * the error (null when the record is usable):
 *
 * <ul>
 *   <li>{@code undecodable: <why>} (first 500 code points) when the payload is not this topic's:
 *       every value is then null;
 *   <li>{@code impossible_value: f=nan, g=inf} for NaN or infinite features (all of them, in schema
 *       order), else {@code impossible_value: t=<millis> ms is outside the years 1..9999} for the
 *       first timestamp a SQL TIMESTAMP cannot hold; such timestamps are null, the rest is kept.
 * </ul>
 */
public final class TelemetryDecoder {
    public static final long SQL_MIN_MS = -62_135_596_800_000L;  // 0001-01-01T00:00:00Z
    public static final long SQL_MAX_MS = 253_402_300_799_999L;  // 9999-12-31T23:59:59.999Z
    private static final BigInteger MIN = BigInteger.valueOf(SQL_MIN_MS);
    private static final BigInteger MAX = BigInteger.valueOf(SQL_MAX_MS);

    /** One decoded record: {@code values[i]} for schema field i (timestamps as epoch millis), and the error. */
    public static final class Decoded {
        public final Object[] values;
        public final String error;

        Decoded(Object[] values, String error) {
            this.values = values;
            this.error = error;
        }
    }

    private final RecordSchema schema;
    private final PayloadDecoder payloads;
    private final Pseudonyms pseudonyms;
    private final int entity;
    private final int[] features;

    public TelemetryDecoder(RecordSchema schema, String schemaId, byte[] secret) {
        this.schema = schema;
        this.payloads = new PayloadDecoder(schema, schemaId);
        this.pseudonyms = new Pseudonyms(secret);
        List<RecordSchema.Field> fields = schema.fields;
        int e = -1;
        int[] f = new int[schema.features.size()];
        int k = 0;
        for (int i = 0; i < fields.size(); i++) {
            if (fields.get(i).name.equals(schema.entity)) {
                e = i;
            }
            if (schema.features.contains(fields.get(i).name)) {
                f[k++] = i;
            }
        }
        this.entity = e;
        this.features = f;
    }

    public Decoded decode(byte[] payload, byte[] schemaHeader) {
        Object[] values;
        try {
            values = payloads.decode(payload, schemaHeader);
        } catch (DecodeError e) {
            return new Decoded(new Object[schema.fields.size()], PyText.truncate("undecodable: " + e.getMessage(), 500));
        }
        String error = null;
        StringBuilder bad = null;
        for (int i : features) {
            Object v = values[i];
            boolean finite = !(v instanceof Double && !Double.isFinite((Double) v))
                    && !(v instanceof Float && !Float.isFinite((Float) v));
            if (!finite) {
                bad = bad == null ? new StringBuilder("impossible_value: ") : bad.append(", ");
                bad.append(schema.fields.get(i).name).append('=').append(PyText.reprFloat(((Number) v).doubleValue()));
            }
        }
        if (bad != null) {
            error = bad.toString();
        }
        List<RecordSchema.Field> fields = schema.fields;
        for (int i = 0; i < values.length; i++) {
            if (!fields.get(i).isTimestamp() || values[i] == null) {
                continue;
            }
            Object v = values[i];
            boolean outside = v instanceof BigInteger
                    ? ((BigInteger) v).compareTo(MIN) < 0 || ((BigInteger) v).compareTo(MAX) > 0
                    : (Long) v < SQL_MIN_MS || (Long) v > SQL_MAX_MS;
            if (outside) {
                if (error == null) {
                    error = "impossible_value: " + fields.get(i).name + "=" + v + " ms is outside the years 1..9999";
                }
                values[i] = null;
            } else if (v instanceof BigInteger) {
                values[i] = ((BigInteger) v).longValue();
            }
        }
        for (int i = 0; i < values.length; i++) {
            // PyFlink turns the Python decode's NaN into NULL (Arrow's from_pandas masks NaN as null)
            Object v = values[i];
            if ((v instanceof Double && Double.isNaN((Double) v)) || (v instanceof Float && Float.isNaN((Float) v))) {
                values[i] = null;
            }
        }
        if (entity >= 0 && values[entity] != null) {
            String id = (String) values[entity];
            if (hasLoneSurrogate(id)) {
                // str.encode() raises in Python, failing its job; here the record is dead-lettered
                return new Decoded(new Object[values.length], "undecodable: " + fields.get(entity).name
                        + " is not encodable as UTF-8 (a lone surrogate)");
            }
            values[entity] = pseudonyms.of(id);
        }
        return new Decoded(values, error);
    }

    private static boolean hasLoneSurrogate(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c)) {
                if (i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                    i++;
                    continue;
                }
                return true;
            }
            if (Character.isLowSurrogate(c)) {
                return true;
            }
        }
        return false;
    }
}
