package dev.vigil.flink.decode;

import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * One topic's record values -> field values, as connectors/payloads.py's PayloadDecoder (with
 * {@code raw_times=True}) decides: the {@code vigil.schema} header check, then the topic's
 * format: {@code avro} (schemaless), {@code confluent} (magic byte 0, 4-byte schema id, Avro) or
 * {@code json} (an object with the schema's fields, coerced as {@code json_record} does).
 *
 * <p>{@link #decode} returns one value per schema field (timestamps as raw epoch millis, Long) or
 * throws {@link DecodeError} with the exact text the Python decode puts after "undecodable: ".
 */
public final class PayloadDecoder {
    private final RecordSchema schema;
    private final String schemaId;
    private final byte[] header;
    private final AvroBody avro;

    public PayloadDecoder(RecordSchema schema, String schemaId) {
        this.schema = schema;
        this.schemaId = schemaId;
        this.header = schemaId.getBytes(StandardCharsets.UTF_8);
        this.avro = new AvroBody(schema);
    }

    public Object[] decode(byte[] value, byte[] schemaHeader) throws DecodeError {
        if (value == null) {
            throw new DecodeError("empty payload");
        }
        if (schemaHeader != null && !Arrays.equals(schemaHeader, header)) {
            String written;
            try {
                int[] cps = PyText.decodeUtf8(schemaHeader, 0, schemaHeader.length, PyText.Errors.REPLACE);
                written = PyText.fromCodePoints(cps, 0, cps.length);
            } catch (PyText.UnicodeDecodeError e) {
                throw new IllegalStateException(e);  // REPLACE never raises
            }
            throw new DecodeError("written with schema " + written + ", this job reads " + schemaId);
        }
        switch (schema.format) {
            case "avro":
                return avro.decode(value, 0, value.length);
            case "confluent":
                if (value.length < 5 || value[0] != 0) {
                    String magic = value.length == 0 ? "missing" : String.format("%02x", value[0] & 0xff);
                    throw new DecodeError("not Confluent's wire format (magic byte " + magic + ", expected 00)");
                }
                long written = ((value[1] & 0xffL) << 24) | ((value[2] & 0xffL) << 16) | ((value[3] & 0xffL) << 8)
                        | (value[4] & 0xffL);
                if (schema.confluentId != null && !BigInteger.valueOf(written).equals(pyInt(schema.confluentId))) {
                    throw new DecodeError("written with registry schema id " + written + ", this topic is registered "
                            + "with id " + PyText.str(schema.confluentId));
                }
                return avro.decode(value, 5, value.length);
            default:
                return json(value);
        }
    }

    /** {@code int(x)} of the schema's vigil.confluent_id (a number or a decimal string). */
    private static BigInteger pyInt(Object x) {
        if (x instanceof Long) {
            return BigInteger.valueOf((Long) x);
        }
        if (x instanceof BigInteger) {
            return (BigInteger) x;
        }
        if (x instanceof Double) {
            return new java.math.BigDecimal((Double) x).toBigInteger();
        }
        return new BigInteger(PyText.strip(x.toString()).replace("_", ""));
    }

    private Object[] json(byte[] value) throws DecodeError {
        Object data;
        try {
            data = PyJson.loads(value);
        } catch (PyText.UnicodeDecodeError e) {
            throw new DecodeError("not JSON: " + e.str());
        } catch (PyJson.JsonDecodeError e) {
            throw new DecodeError("not JSON: " + e.getMessage());
        } catch (PyJson.ValueError e) {
            throw new DecodeError(e.getMessage());  // a ValueError outside JSONDecodeError: no "not JSON:" prefix
        }
        if (!(data instanceof Map)) {
            throw new DecodeError("expected a JSON object, got " + PyText.typeName(data));
        }
        return jsonRecord((Map<?, ?>) data);
    }

    private static boolean isNumber(Object v) {
        return v instanceof Long || v instanceof BigInteger || v instanceof Double;
    }

    /** connectors.payloads.json_record(data, schema, raw_times=True). */
    private Object[] jsonRecord(Map<?, ?> data) throws DecodeError {
        List<RecordSchema.Field> fields = schema.fields;
        Object[] values = new Object[fields.size()];
        for (int i = 0; i < values.length; i++) {
            RecordSchema.Field f = fields.get(i);
            Object value = data.get(PyJson.PyStr.of(f.name));
            if (value == null) {
                if (f.nullable) {
                    continue;
                }
                throw new DecodeError("missing field " + PyText.reprStr(f.name));
            }
            if (f.isTimestamp()) {
                values[i] = millis(f, value);
                continue;
            }
            switch (f.base) {
                case DOUBLE:
                case FLOAT: {
                    if (!isNumber(value)) {
                        throw new DecodeError(f.name + ": expected a number, got " + PyText.repr(value));
                    }
                    double d = value instanceof Double ? (Double) value
                            : value instanceof Long ? (double) (Long) value : ((BigInteger) value).doubleValue();
                    if (Double.isInfinite(d) && !(value instanceof Double)) {
                        // float(int) raises OverflowError in Python, which fails its job
                        throw new DecodeError(f.name + ": int too large to convert to float");
                    }
                    values[i] = f.base == RecordSchema.Base.FLOAT ? (Object) (float) d : (Object) d;
                    break;
                }
                case INT:
                case LONG: {
                    if (!(value instanceof Long || value instanceof BigInteger)) {
                        throw new DecodeError(f.name + ": expected an integer, got " + PyText.repr(value));
                    }
                    long lo = f.base == RecordSchema.Base.INT ? Integer.MIN_VALUE : Long.MIN_VALUE;
                    long hi = f.base == RecordSchema.Base.INT ? Integer.MAX_VALUE : Long.MAX_VALUE;
                    if (value instanceof BigInteger || (Long) value < lo || (Long) value > hi) {
                        // Python keeps the int and then fails its job converting it to the column's type
                        throw new DecodeError(f.name + ": " + value + " does not fit the field's type "
                                + f.base.name().toLowerCase());
                    }
                    values[i] = value;
                    break;
                }
                case BOOLEAN:
                    if (!(value instanceof Boolean)) {
                        throw new DecodeError(f.name + ": expected true or false, got " + PyText.repr(value));
                    }
                    values[i] = value;
                    break;
                case STRING:
                    values[i] = PyText.str(value);
                    break;
                case BYTES:
                    if (!(value instanceof PyJson.PyStr)) {
                        throw new DecodeError(f.name + ": expected a string for a bytes field, got " + PyText.repr(value));
                    }
                    values[i] = value.toString().getBytes(StandardCharsets.UTF_8);
                    break;
                default:
                    throw new IllegalStateException(String.valueOf(f.base));
            }
        }
        return values;
    }

    /** connectors.payloads._millis: epoch millis of a JSON time (a number of millis or ISO 8601). */
    private static Object millis(RecordSchema.Field f, Object value) throws DecodeError {
        if (isNumber(value)) {
            if (value instanceof Double) {
                double d = (Double) value;
                if (Double.isNaN(d) || Double.isInfinite(d)) {
                    throw new DecodeError(f.name + ": " + PyText.repr(value) + " is not a time");
                }
                // int(d): exact, truncated toward zero (may exceed 64 bits; the range check says so)
                return new java.math.BigDecimal(d).toBigInteger();
            }
            return value;
        }
        // str(value).replace("Z", "+00:00"), on code points (a str may hold lone surrogates)
        int[] cps = value instanceof PyJson.PyStr ? ((PyJson.PyStr) value).cps : PyText.codePoints(PyText.str(value));
        PyText.CodePoints text = new PyText.CodePoints();
        for (int cp : cps) {
            if (cp == 'Z') {
                for (char c : "+00:00".toCharArray()) {
                    text.add(c);
                }
            } else {
                text.add(cp);
            }
        }
        try {
            return IsoTime.epochMillis(text.toArray());
        } catch (IsoTime.Invalid e) {
            throw new DecodeError(f.name + ": cannot parse time " + PyText.repr(value));
        }
    }
}
