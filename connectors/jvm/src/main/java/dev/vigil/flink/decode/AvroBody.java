package dev.vigil.flink.decode;

import java.util.List;

/**
 * Schemaless Avro bytes -> field values, as fastavro 1.13's C reader ({@code _read.pyx}) decodes
 * them for connectors.avro_serde.AvroDeserializer, with the same failures and their reprs:
 * EOFError at the end of the bytes, IndexError inside a varint or for a union index past the
 * branches (negative indices count from the end, as a Python list's do), UnicodeDecodeError for
 * strings that are not UTF-8, and the trailing-bytes check.
 *
 * <p>Values: String, Double, Float, Long (int, long and timestamp-millis as raw epoch millis),
 * Boolean, byte[], or null.
 */
final class AvroBody {
    /** fastavro reports a short read of a fixed-size value with the BytesIO's repr (a memory address). */
    static final String BYTES_IO = "<_io.BytesIO object at 0x7f0000000000>";

    private final RecordSchema schema;

    AvroBody(RecordSchema schema) {
        this.schema = schema;
    }

    /** A failure inside fastavro: its repr goes into the reason. */
    private static final class ReadFailure extends Exception {
        final String repr;

        ReadFailure(String repr) {
            super(repr, null, false, false);
            this.repr = repr;
        }
    }

    private static final class Reader {
        final byte[] b;
        final int end;
        int pos;

        Reader(byte[] b, int from, int end) {
            this.b = b;
            this.pos = from;
            this.end = end;
        }

        long readLong() throws ReadFailure {
            if (pos >= end) {
                throw new ReadFailure("EOFError()");
            }
            long c = b[pos++] & 0xff;
            long n = c & 0x7F;
            int shift = 7;
            while ((c & 0x80) != 0) {
                if (pos >= end) {
                    throw new ReadFailure("IndexError('string index out of range')");
                }
                c = b[pos++] & 0xff;
                n |= (c & 0x7F) << shift;  // the shift wraps at 64 bits, as x86's does in fastavro's C
                shift += 7;
            }
            return (n >>> 1) ^ -(n & 1);
        }

        int[] fixed(int size, String type) throws ReadFailure {
            if (end - pos < size) {
                pos = end;
                throw new ReadFailure("EOFError(" + PyText.reprStr("cannot read " + type + " from " + BYTES_IO) + ")");
            }
            int at = pos;
            pos += size;
            return new int[] {at};
        }

        /** read_bytes: (from, to) of the value within b. */
        int[] bytes() throws ReadFailure {
            long size = readLong();
            int remaining = end - pos;
            if (size < 0) {
                pos = end;  // BytesIO.read(negative) reads everything
                throw new ReadFailure("EOFError(" + PyText.reprStr("Expected " + size + " bytes, read " + remaining) + ")");
            }
            if (size > remaining) {
                pos = end;
                throw new ReadFailure("EOFError(" + PyText.reprStr("Expected " + size + " bytes, read " + remaining) + ")");
            }
            int at = pos;
            pos += (int) size;
            return new int[] {at, pos};
        }
    }

    private Object read(Reader r, RecordSchema.Base base, RecordSchema.Field field) throws ReadFailure {
        switch (base) {
            case NULL:
                return null;
            case STRING: {
                int[] span = r.bytes();
                try {
                    int[] cps = PyText.decodeUtf8(r.b, span[0], span[1], PyText.Errors.STRICT);
                    return PyText.fromCodePoints(cps, 0, cps.length);
                } catch (PyText.UnicodeDecodeError e) {
                    throw new ReadFailure(e.repr());
                }
            }
            case INT:
            case LONG:
                return r.readLong();
            case DOUBLE: {
                int at = r.fixed(8, "double")[0];
                long bits = 0;
                for (int i = 7; i >= 0; i--) {
                    bits = (bits << 8) | (r.b[at + i] & 0xffL);
                }
                return Double.longBitsToDouble(bits);
            }
            case FLOAT: {
                int at = r.fixed(4, "float")[0];
                int bits = 0;
                for (int i = 3; i >= 0; i--) {
                    bits = (bits << 8) | (r.b[at + i] & 0xff);
                }
                return Float.intBitsToFloat(bits);
            }
            case BOOLEAN: {
                int at = r.fixed(1, "boolean")[0];
                return r.b[at] != 0;
            }
            case BYTES: {
                int[] span = r.bytes();
                return java.util.Arrays.copyOfRange(r.b, span[0], span[1]);
            }
            default:
                throw new IllegalStateException(String.valueOf(base));
        }
    }

    /**
     * The record in {@code b[from:to]}, one value per schema field; DecodeError with the Python
     * text for bytes that are not one record of this schema.
     */
    Object[] decode(byte[] b, int from, int to) throws DecodeError {
        Reader r = new Reader(b, from, to);
        List<RecordSchema.Field> fields = schema.fields;
        Object[] values = new Object[fields.size()];
        try {
            for (int i = 0; i < values.length; i++) {
                RecordSchema.Field f = fields.get(i);
                if (f.branches == null) {
                    values[i] = read(r, f.base, f);
                } else {
                    long index = r.readLong();
                    int n = f.branches.size();
                    long at = index < 0 ? index + n : index;
                    if (at < 0 || at >= n) {
                        throw new ReadFailure("IndexError('list index out of range')");
                    }
                    values[i] = read(r, f.branches.get((int) at), f);
                }
            }
        } catch (ReadFailure e) {
            throw new DecodeError("cannot decode " + (to - from) + " bytes as " + schema.name + ": " + e.repr);
        }
        if (r.pos != to) {
            throw new DecodeError((to - r.pos) + " trailing bytes after a " + schema.name
                    + " record (wrong schema version?)");
        }
        for (int i = 0; i < values.length; i++) {
            RecordSchema.Field f = fields.get(i);
            if (f.base == RecordSchema.Base.INT && values[i] != null) {
                long v = (Long) values[i];
                if (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE) {
                    // fastavro reads it; the Python decode then fails its job converting it to a 32-bit column
                    throw new DecodeError("cannot decode " + (to - from) + " bytes as " + schema.name + ": "
                            + f.name + "=" + v + " does not fit an Avro int (32 bits)");
                }
            }
        }
        return values;
    }
}
