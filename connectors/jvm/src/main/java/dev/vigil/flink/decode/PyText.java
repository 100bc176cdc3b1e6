package dev.vigil.flink.decode;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.MathContext;
import java.math.RoundingMode;
import java.util.List;
import java.util.Map;

/**
 * Text as CPython 3.11 writes it, for reasons that must read exactly as the Python decode's.
 *
 * <p>Python strings are sequences of code points (a lone surrogate is one code point), so text
 * here is {@code int[]} of code points where positions matter. {@code repr}/{@code str} follow
 * {@code unicode_repr}, {@code bytes_repr}, {@code float_repr} (shortest round trip) and the
 * container reprs; the codecs follow CPython's UTF-8/16/32 decoders, their error ranges and
 * reasons, and the {@code replace}/{@code surrogatepass} error handlers.
 */
public final class PyText {
    private PyText() {}

    /** A UnicodeDecodeError: CPython's encoding name, the object decoded, the error range, the reason. */
    public static final class UnicodeDecodeError extends Exception {
        public final String encoding;
        public final byte[] object;
        public final int start;
        public final int end;
        public final String reason;

        UnicodeDecodeError(String encoding, byte[] object, int start, int end, String reason) {
            super(reason, null, false, false);
            this.encoding = encoding;
            this.object = object;
            this.start = start;
            this.end = end;
            this.reason = reason;
        }

        /** {@code repr(exc)}. */
        public String repr() {
            return "UnicodeDecodeError(" + reprStr(encoding) + ", " + reprBytes(object, 0, object.length) + ", "
                    + start + ", " + end + ", " + reprStr(reason) + ")";
        }

        /** {@code str(exc)}. */
        public String str() {
            if (end == start + 1) {
                return String.format("'%s' codec can't decode byte 0x%02x in position %d: %s", encoding,
                        object[start] & 0xff, start, reason);
            }
            return String.format("'%s' codec can't decode bytes in position %d-%d: %s", encoding, start, end - 1,
                    reason);
        }
    }

    public enum Errors { STRICT, REPLACE, SURROGATEPASS }

    /** A growable code point buffer. */
    static final class CodePoints {
        int[] data = new int[16];
        int size;

        void add(int cp) {
            if (size == data.length) {
                data = java.util.Arrays.copyOf(data, size * 2);
            }
            data[size++] = cp;
        }

        int[] toArray() {
            return java.util.Arrays.copyOf(data, size);
        }
    }

    // --- UTF-8 -----------------------------------------------------------------------------------

    private static boolean cont(int b) {
        return (b & 0xC0) == 0x80;
    }

    /**
     * {@code bytes(b[from:to]).decode("utf-8", errors)} as code points (CPython's decoder: the same
     * error ranges, reasons and handler behaviour).
     */
    public static int[] decodeUtf8(byte[] b, int from, int to, Errors errors) throws UnicodeDecodeError {
        CodePoints out = new CodePoints();
        int s = from;
        while (s < to) {
            int ch = b[s] & 0xff;
            if (ch < 0x80) {
                out.add(ch);
                s++;
                continue;
            }
            int n = to - s;
            // kind: 0 = unexpected end, 1 = invalid start, 2..4 = invalid continuation at byte kind-1
            int kind = -1;
            int cp = 0;
            int len = 0;
            if (ch < 0xE0) {
                if (ch < 0xC2) {
                    kind = 1;
                } else if (n < 2) {
                    kind = 0;
                } else if (!cont(b[s + 1] & 0xff)) {
                    kind = 2;
                } else {
                    cp = ((ch & 0x1F) << 6) | (b[s + 1] & 0x3F);
                    len = 2;
                }
            } else if (ch < 0xF0) {
                if (n < 3) {
                    if (n < 2) {
                        kind = 0;
                    } else {
                        int ch2 = b[s + 1] & 0xff;
                        kind = (!cont(ch2) || (ch2 < 0xA0 ? ch == 0xE0 : ch == 0xED)) ? 2 : 0;
                    }
                } else {
                    int ch2 = b[s + 1] & 0xff;
                    int ch3 = b[s + 2] & 0xff;
                    if (!cont(ch2) || (ch == 0xE0 && ch2 < 0xA0) || (ch == 0xED && ch2 >= 0xA0)) {
                        kind = 2;
                    } else if (!cont(ch3)) {
                        kind = 3;
                    } else {
                        cp = ((ch & 0x0F) << 12) | ((ch2 & 0x3F) << 6) | (ch3 & 0x3F);
                        len = 3;
                    }
                }
            } else if (ch < 0xF5) {
                if (n < 4) {
                    if (n < 2) {
                        kind = 0;
                    } else {
                        int ch2 = b[s + 1] & 0xff;
                        if (!cont(ch2) || (ch2 < 0x90 ? ch == 0xF0 : ch == 0xF4)) {
                            kind = 2;
                        } else if (n < 3) {
                            kind = 0;
                        } else {
                            kind = cont(b[s + 2] & 0xff) ? 0 : 3;
                        }
                    }
                } else {
                    int ch2 = b[s + 1] & 0xff;
                    int ch3 = b[s + 2] & 0xff;
                    int ch4 = b[s + 3] & 0xff;
                    if (!cont(ch2) || (ch == 0xF0 && ch2 < 0x90) || (ch == 0xF4 && ch2 >= 0x90)) {
                        kind = 2;
                    } else if (!cont(ch3)) {
                        kind = 3;
                    } else if (!cont(ch4)) {
                        kind = 4;
                    } else {
                        cp = ((ch & 0x07) << 18) | ((ch2 & 0x3F) << 12) | ((ch3 & 0x3F) << 6) | (ch4 & 0x3F);
                        len = 4;
                    }
                }
            } else {
                kind = 1;
            }
            if (kind < 0) {
                out.add(cp);
                s += len;
                continue;
            }
            int start = s - from;
            int end;
            String reason;
            if (kind == 0) {
                reason = "unexpected end of data";
                end = to - from;
            } else if (kind == 1) {
                reason = "invalid start byte";
                end = start + 1;
            } else {
                reason = "invalid continuation byte";
                end = start + kind - 1;
            }
            if (errors == Errors.REPLACE) {
                out.add(0xFFFD);
                s = from + end;
                continue;
            }
            if (errors == Errors.SURROGATEPASS && to - s >= 3) {
                int p0 = b[s] & 0xff;
                int p1 = b[s + 1] & 0xff;
                int p2 = b[s + 2] & 0xff;
                if ((p0 & 0xF0) == 0xE0 && cont(p1) && cont(p2)) {
                    int sur = ((p0 & 0x0F) << 12) | ((p1 & 0x3F) << 6) | (p2 & 0x3F);
                    if (sur >= 0xD800 && sur <= 0xDFFF) {
                        out.add(sur);
                        s += 3;
                        continue;
                    }
                }
            }
            throw new UnicodeDecodeError("utf-8", java.util.Arrays.copyOfRange(b, from, to), start, end, reason);
        }
        return out.toArray();
    }

    /** {@code data.decode("utf-16" | "utf-16-le" | "utf-16-be", "surrogatepass")}. */
    public static int[] decodeUtf16(byte[] data, String encoding) throws UnicodeDecodeError {
        int q = 0;
        int e = data.length;
        boolean little;
        if (encoding.equals("utf-16")) {
            little = true;  // native order (x86) unless the BOM says otherwise
            if (e >= 2) {
                int bom = ((data[1] & 0xff) << 8) | (data[0] & 0xff);
                if (bom == 0xFEFF) {
                    q = 2;
                } else if (bom == 0xFFFE) {
                    q = 2;
                    little = false;
                }
            }
        } else {
            little = encoding.endsWith("le");
        }
        String excEncoding = encoding.equals("utf-16") ? (little ? "utf-16-le" : "utf-16-be") : encoding;
        CodePoints out = new CodePoints();
        while (q < e) {
            if (e - q < 2) {
                throw new UnicodeDecodeError(excEncoding, data, q, e, "truncated data");
            }
            int ch = unit16(data, q, little);
            q += 2;
            if (ch < 0xD800 || ch > 0xDFFF) {
                out.add(ch);
                continue;
            }
            String reason;
            int start;
            int end;
            if (ch >= 0xDC00) {
                reason = "illegal encoding";
                start = q - 2;
                end = start + 2;
            } else if (e - q < 2) {
                reason = "unexpected end of data";
                start = q - 2;
                end = e;
            } else {
                int ch2 = unit16(data, q, little);
                if (ch2 >= 0xDC00 && ch2 <= 0xDFFF) {
                    out.add((((ch & 0x3FF) << 10) | (ch2 & 0x3FF)) + 0x10000);
                    q += 2;
                    continue;
                }
                reason = "illegal UTF-16 surrogate";
                start = q - 2;
                end = start + 2;
            }
            // surrogatepass: the surrogate at `start` passes as a code point
            if (data.length - start >= 2) {
                int sur = unit16(data, start, little);
                if (sur >= 0xD800 && sur <= 0xDFFF) {
                    out.add(sur);
                    q = start + 2;
                    continue;
                }
            }
            throw new UnicodeDecodeError(excEncoding, data, start, end, reason);
        }
        return out.toArray();
    }

    private static int unit16(byte[] d, int at, boolean little) {
        return little ? ((d[at + 1] & 0xff) << 8) | (d[at] & 0xff) : ((d[at] & 0xff) << 8) | (d[at + 1] & 0xff);
    }

    private static long unit32(byte[] d, int at, boolean little) {
        long v = little
                ? ((d[at + 3] & 0xffL) << 24) | ((d[at + 2] & 0xffL) << 16) | ((d[at + 1] & 0xffL) << 8) | (d[at] & 0xffL)
                : ((d[at] & 0xffL) << 24) | ((d[at + 1] & 0xffL) << 16) | ((d[at + 2] & 0xffL) << 8) | (d[at + 3] & 0xffL);
        return v;
    }

    /** {@code data.decode("utf-32" | "utf-32-le" | "utf-32-be", "surrogatepass")}. */
    public static int[] decodeUtf32(byte[] data, String encoding) throws UnicodeDecodeError {
        int q = 0;
        int e = data.length;
        boolean little;
        if (encoding.equals("utf-32")) {
            little = true;
            if (e >= 4) {
                long bom = unit32(data, 0, true);
                if (bom == 0x0000FEFFL) {
                    q = 4;
                } else if (bom == 0xFFFE0000L) {
                    q = 4;
                    little = false;
                }
            }
        } else {
            little = encoding.endsWith("le");
        }
        String excEncoding = encoding.equals("utf-32") ? (little ? "utf-32-le" : "utf-32-be") : encoding;
        CodePoints out = new CodePoints();
        while (q < e) {
            if (e - q < 4) {
                throw new UnicodeDecodeError(excEncoding, data, q, e, "truncated data");
            }
            long ch = unit32(data, q, little);
            if (ch >= 0xD800 && ch <= 0xDFFF) {
                out.add((int) ch);  // surrogatepass
                q += 4;
                continue;
            }
            if (ch >= 0x110000) {
                throw new UnicodeDecodeError(excEncoding, data, q, q + 4, "code point not in range(0x110000)");
            }
            out.add((int) ch);
            q += 4;
        }
        return out.toArray();
    }

    // --- repr / str ------------------------------------------------------------------------------

    /** A Java string as Python code points (surrogate pairs joined, as Python's str would hold them). */
    public static int[] codePoints(String s) {
        return s.codePoints().toArray();
    }

    public static String fromCodePoints(int[] cps, int from, int to) {
        StringBuilder sb = new StringBuilder(to - from);
        for (int i = from; i < to; i++) {
            sb.appendCodePoint(cps[i]);
        }
        return sb.toString();
    }

    /** Python's {@code str.isprintable()} for one code point (Java's Unicode tables). */
    static boolean printable(int cp) {
        if (cp == ' ') {
            return true;
        }
        switch (Character.getType(cp)) {
            case Character.CONTROL:
            case Character.FORMAT:
            case Character.SURROGATE:
            case Character.PRIVATE_USE:
            case Character.UNASSIGNED:
            case Character.LINE_SEPARATOR:
            case Character.PARAGRAPH_SEPARATOR:
            case Character.SPACE_SEPARATOR:
                return false;
            default:
                return true;
        }
    }

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private static void hex(StringBuilder sb, int value, int digits) {
        for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) {
            sb.append(HEX[(value >>> shift) & 0xf]);
        }
    }

    /** {@code repr(s)} of a Python str given as a Java string. */
    public static String reprStr(String s) {
        return reprStr(codePoints(s));
    }

    /** {@code repr(s)} of a Python str given as code points. */
    public static String reprStr(int[] cps) {
        boolean single = false;
        boolean dbl = false;
        for (int cp : cps) {
            single |= cp == '\'';
            dbl |= cp == '"';
        }
        char quote = single && !dbl ? '"' : '\'';
        StringBuilder sb = new StringBuilder(cps.length + 2);
        sb.append(quote);
        for (int cp : cps) {
            if (cp == quote || cp == '\\') {
                sb.append('\\').append((char) cp);
            } else if (cp == '\t') {
                sb.append("\\t");
            } else if (cp == '\n') {
                sb.append("\\n");
            } else if (cp == '\r') {
                sb.append("\\r");
            } else if (cp < ' ' || cp == 0x7f) {
                sb.append("\\x");
                hex(sb, cp, 2);
            } else if (cp < 0x7f) {
                sb.append((char) cp);
            } else if (printable(cp)) {
                sb.appendCodePoint(cp);
            } else if (cp <= 0xff) {
                sb.append("\\x");
                hex(sb, cp, 2);
            } else if (cp <= 0xffff) {
                sb.append("\\u");
                hex(sb, cp, 4);
            } else {
                sb.append("\\U");
                hex(sb, cp, 8);
            }
        }
        return sb.append(quote).toString();
    }

    /** {@code repr(bytes(b[from:to]))}. */
    public static String reprBytes(byte[] b, int from, int to) {
        boolean single = false;
        boolean dbl = false;
        for (int i = from; i < to; i++) {
            single |= b[i] == '\'';
            dbl |= b[i] == '"';
        }
        char quote = single && !dbl ? '"' : '\'';
        StringBuilder sb = new StringBuilder(to - from + 3);
        sb.append('b').append(quote);
        for (int i = from; i < to; i++) {
            int c = b[i] & 0xff;
            if (c == quote || c == '\\') {
                sb.append('\\').append((char) c);
            } else if (c == '\t') {
                sb.append("\\t");
            } else if (c == '\n') {
                sb.append("\\n");
            } else if (c == '\r') {
                sb.append("\\r");
            } else if (c < ' ' || c >= 0x7f) {
                sb.append("\\x");
                hex(sb, c, 2);
            } else {
                sb.append((char) c);
            }
        }
        return sb.append(quote).toString();
    }

    /** {@code repr(float)} (= {@code str(float)}): the shortest string that reads back as {@code d}. */
    public static String reprFloat(double d) {
        if (Double.isNaN(d)) {
            return "nan";
        }
        if (Double.isInfinite(d)) {
            return d > 0 ? "inf" : "-inf";
        }
        if (d == 0) {
            return (1 / d < 0) ? "-0.0" : "0.0";
        }
        BigDecimal exact = new BigDecimal(d);
        BigDecimal best = null;
        for (int p = 1; p <= 17 && best == null; p++) {
            MathContext mc = new MathContext(p, RoundingMode.HALF_EVEN);
            for (RoundingMode mode : new RoundingMode[] {RoundingMode.HALF_EVEN, RoundingMode.UP, RoundingMode.DOWN}) {
                BigDecimal c = exact.round(mode == RoundingMode.HALF_EVEN ? mc : new MathContext(p, mode));
                if (c.doubleValue() == d && (best == null
                        || c.subtract(exact).abs().compareTo(best.subtract(exact).abs()) < 0)) {
                    best = c;
                }
            }
        }
        BigDecimal stripped = best.stripTrailingZeros();
        String digits = stripped.unscaledValue().abs().toString();
        int decpt = digits.length() - stripped.scale();  // value = 0.digits * 10^decpt
        StringBuilder sb = new StringBuilder();
        if (d < 0) {
            sb.append('-');
        }
        int n = digits.length();
        if (decpt <= -4 || decpt > 16) {
            sb.append(digits.charAt(0));
            if (n > 1) {
                sb.append('.').append(digits, 1, n);
            }
            int exp = decpt - 1;
            sb.append('e').append(exp < 0 ? '-' : '+');
            int a = Math.abs(exp);
            if (a < 10) {
                sb.append('0');
            }
            sb.append(a);
        } else if (decpt <= 0) {
            sb.append("0.");
            for (int i = 0; i < -decpt; i++) {
                sb.append('0');
            }
            sb.append(digits);
        } else if (decpt >= n) {
            sb.append(digits);
            for (int i = 0; i < decpt - n; i++) {
                sb.append('0');
            }
            sb.append(".0");
        } else {
            sb.append(digits, 0, decpt).append('.').append(digits, decpt, n);
        }
        return sb.toString();
    }

    /** {@code repr(value)} of a value as PyJson returns them (None, bool, int, float, str, list, dict). */
    public static String repr(Object value) {
        if (value == null) {
            return "None";
        }
        if (value instanceof Boolean) {
            return (Boolean) value ? "True" : "False";
        }
        if (value instanceof Long || value instanceof BigInteger) {
            return value.toString();
        }
        if (value instanceof Double) {
            return reprFloat((Double) value);
        }
        if (value instanceof PyJson.PyStr) {
            return reprStr(((PyJson.PyStr) value).cps);
        }
        if (value instanceof String) {
            return reprStr((String) value);
        }
        if (value instanceof List) {
            StringBuilder sb = new StringBuilder("[");
            boolean first = true;
            for (Object item : (List<?>) value) {
                if (!first) {
                    sb.append(", ");
                }
                first = false;
                sb.append(repr(item));
            }
            return sb.append(']').toString();
        }
        if (value instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            boolean first = true;
            for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                if (!first) {
                    sb.append(", ");
                }
                first = false;
                sb.append(repr(entry.getKey())).append(": ").append(repr(entry.getValue()));
            }
            return sb.append('}').toString();
        }
        throw new IllegalArgumentException("no Python repr for " + value.getClass());
    }

    /** {@code str(value)}: a str is itself, everything else its repr. */
    public static String str(Object value) {
        if (value instanceof PyJson.PyStr) {
            return value.toString();
        }
        if (value instanceof String) {
            return (String) value;
        }
        return repr(value);
    }

    /** {@code type(value).__name__}. */
    public static String typeName(Object value) {
        if (value == null) {
            return "NoneType";
        }
        if (value instanceof Boolean) {
            return "bool";
        }
        if (value instanceof Long || value instanceof BigInteger) {
            return "int";
        }
        if (value instanceof Double) {
            return "float";
        }
        if (value instanceof PyJson.PyStr || value instanceof String) {
            return "str";
        }
        if (value instanceof List) {
            return "list";
        }
        return "dict";
    }

    /** {@code text[:limit]} counted in code points, as Python slices a str. */
    public static String truncate(String text, int limit) {
        if (text.length() <= limit) {
            return text;
        }
        int count = text.codePointCount(0, text.length());
        if (count <= limit) {
            return text;
        }
        return text.substring(0, text.offsetByCodePoints(0, limit));
    }

    /** Python's {@code str.isspace()} for one code point (what {@code str.strip()} removes). */
    public static boolean isSpace(int cp) {
        switch (cp) {
            case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x1C: case 0x1D: case 0x1E: case 0x1F:
            case 0x20: case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
            case 0x3000:
                return true;
            default:
                return cp >= 0x2000 && cp <= 0x200A;
        }
    }

    /** {@code s.strip()}. */
    public static String strip(String s) {
        int[] cps = codePoints(s);
        int from = 0;
        int to = cps.length;
        while (from < to && isSpace(cps[from])) {
            from++;
        }
        while (to > from && isSpace(cps[to - 1])) {
            to--;
        }
        return fromCodePoints(cps, from, to);
    }
}
