package dev.vigil.flink.decode;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * {@code json.loads(bytes)} of CPython 3.11 (its C scanner): the same values, the same
 * acceptance (NaN/Infinity, duplicate keys: the last wins, surrogatepass), the same
 * JSONDecodeError messages and positions (code points), the same encoding detection.
 *
 * <p>Values: {@code null} (None), Boolean, Long or BigInteger (int), Double (float), {@link PyStr}
 * (str), List (list), LinkedHashMap with PyStr keys (dict).
 */
public final class PyJson {
    private PyJson() {}

    /** A Python str: code points (lone surrogates kept), compared by value. */
    public static final class PyStr {
        final int[] cps;
        private final int hash;

        PyStr(int[] cps) {
            this.cps = cps;
            this.hash = Arrays.hashCode(cps);
        }

        public static PyStr of(String s) {
            return new PyStr(PyText.codePoints(s));
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof PyStr && Arrays.equals(cps, ((PyStr) o).cps);
        }

        @Override
        public int hashCode() {
            return hash;
        }

        /** The code points as a Java string (lone surrogates stay single chars). */
        @Override
        public String toString() {
            return PyText.fromCodePoints(cps, 0, cps.length);
        }
    }

    /** json.JSONDecodeError: {@code str(exc)} is its message. */
    public static final class JsonDecodeError extends Exception {
        JsonDecodeError(String msg, int[] doc, int pos) {
            super(format(msg, doc, pos), null, false, false);
        }

        private static String format(String msg, int[] doc, int pos) {
            int line = 1;
            int lastNewline = -1;
            for (int i = 0; i < pos && i < doc.length; i++) {
                if (doc[i] == '\n') {
                    line++;
                    lastNewline = i;
                }
            }
            return msg + ": line " + line + " column " + (pos - lastNewline) + " (char " + pos + ")";
        }
    }

    /** A ValueError that json.loads raises outside JSONDecodeError (int() beyond 4300 digits). */
    public static final class ValueError extends Exception {
        ValueError(String msg) {
            super(msg, null, false, false);
        }
    }

    /** Nesting beyond this is refused (Python raises RecursionError near 1000, which fails its job). */
    static final int MAX_DEPTH = 990;

    private static final class StopIteration extends Exception {
        final int value;

        StopIteration(int value) {
            super(null, null, false, false);
            this.value = value;
        }
    }

    /** {@code json.detect_encoding(b)}. */
    public static String detectEncoding(byte[] b) {
        int n = b.length;
        if (n >= 4 && ((b[0] == (byte) 0xFF && b[1] == (byte) 0xFE && b[2] == 0 && b[3] == 0)
                || (b[0] == 0 && b[1] == 0 && b[2] == (byte) 0xFE && b[3] == (byte) 0xFF))) {
            return "utf-32";
        }
        if (n >= 2 && ((b[0] == (byte) 0xFF && b[1] == (byte) 0xFE) || (b[0] == (byte) 0xFE && b[1] == (byte) 0xFF))) {
            return "utf-16";
        }
        if (n >= 3 && b[0] == (byte) 0xEF && b[1] == (byte) 0xBB && b[2] == (byte) 0xBF) {
            return "utf-8-sig";
        }
        if (n >= 4) {
            if (b[0] == 0) {
                return b[1] != 0 ? "utf-16-be" : "utf-32-be";
            }
            if (b[1] == 0) {
                return (b[2] != 0 || b[3] != 0) ? "utf-16-le" : "utf-32-le";
            }
        } else if (n == 2) {
            if (b[0] == 0) {
                return "utf-16-be";
            }
            if (b[1] == 0) {
                return "utf-16-le";
            }
        }
        return "utf-8";
    }

    /** {@code b.decode(detect_encoding(b), 'surrogatepass')}. */
    static int[] decodeDocument(byte[] b) throws PyText.UnicodeDecodeError {
        String enc = detectEncoding(b);
        switch (enc) {
            case "utf-8":
                return PyText.decodeUtf8(b, 0, b.length, PyText.Errors.SURROGATEPASS);
            case "utf-8-sig":
                byte[] rest = Arrays.copyOfRange(b, 3, b.length);
                return PyText.decodeUtf8(rest, 0, rest.length, PyText.Errors.SURROGATEPASS);
            case "utf-16":
            case "utf-16-le":
            case "utf-16-be":
                return PyText.decodeUtf16(b, enc);
            default:
                return PyText.decodeUtf32(b, enc);
        }
    }

    /** {@code json.loads(b)}. */
    public static Object loads(byte[] b) throws PyText.UnicodeDecodeError, JsonDecodeError, ValueError {
        return loads(decodeDocument(b));
    }

    /** {@code json.loads(s)} of a str (given as code points). */
    public static Object loads(int[] doc) throws JsonDecodeError, ValueError {
        Scanner s = new Scanner(doc);
        int idx = s.skipWhitespace(0);
        Object obj;
        try {
            obj = s.scanOnce(idx, 0);
        } catch (StopIteration stop) {
            throw new JsonDecodeError("Expecting value", doc, stop.value);
        }
        int end = s.skipWhitespace(s.next);
        if (end != doc.length) {
            throw new JsonDecodeError("Extra data", doc, end);
        }
        return obj;
    }

    /** Parse trusted JSON text (a schema): plain Java values (String keys and strings). */
    public static Object parseTrusted(String text) {
        try {
            return plain(loads(PyText.codePoints(text)));
        } catch (JsonDecodeError | ValueError e) {
            throw new IllegalArgumentException("not JSON: " + e.getMessage(), e);
        }
    }

    private static Object plain(Object v) {
        if (v instanceof PyStr) {
            return v.toString();
        }
        if (v instanceof List) {
            List<Object> out = new ArrayList<>();
            for (Object x : (List<?>) v) {
                out.add(plain(x));
            }
            return out;
        }
        if (v instanceof Map) {
            Map<String, Object> out = new LinkedHashMap<>();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                out.put(e.getKey().toString(), plain(e.getValue()));
            }
            return out;
        }
        return v;
    }

    private static final class Scanner {
        final int[] doc;
        final int len;
        final int endIdx;
        int next;  // the index after the last value scanned

        Scanner(int[] doc) {
            this.doc = doc;
            this.len = doc.length;
            this.endIdx = doc.length - 1;
        }

        static boolean ws(int c) {
            return c == ' ' || c == '\t' || c == '\n' || c == '\r';
        }

        int skipWhitespace(int idx) {
            while (idx <= endIdx && ws(doc[idx])) {
                idx++;
            }
            return idx;
        }

        boolean at(int idx, String text) {
            for (int i = 0; i < text.length(); i++) {
                if (doc[idx + i] != text.charAt(i)) {
                    return false;
                }
            }
            return true;
        }

        Object scanOnce(int idx, int depth) throws StopIteration, JsonDecodeError, ValueError {
            if (idx >= len) {
                throw new StopIteration(idx);
            }
            switch (doc[idx]) {
                case '"':
                    return scanString(idx + 1);
                case '{':
                    if (depth >= MAX_DEPTH) {
                        throw new ValueError("nested deeper than " + MAX_DEPTH + " levels");
                    }
                    return parseObject(idx + 1, depth + 1);
                case '[':
                    if (depth >= MAX_DEPTH) {
                        throw new ValueError("nested deeper than " + MAX_DEPTH + " levels");
                    }
                    return parseArray(idx + 1, depth + 1);
                case 'n':
                    if (idx + 3 < len && at(idx + 1, "ull")) {
                        next = idx + 4;
                        return null;
                    }
                    break;
                case 't':
                    if (idx + 3 < len && at(idx + 1, "rue")) {
                        next = idx + 4;
                        return Boolean.TRUE;
                    }
                    break;
                case 'f':
                    if (idx + 4 < len && at(idx + 1, "alse")) {
                        next = idx + 5;
                        return Boolean.FALSE;
                    }
                    break;
                case 'N':
                    if (idx + 2 < len && at(idx + 1, "aN")) {
                        next = idx + 3;
                        return Double.NaN;
                    }
                    break;
                case 'I':
                    if (idx + 7 < len && at(idx + 1, "nfinity")) {
                        next = idx + 8;
                        return Double.POSITIVE_INFINITY;
                    }
                    break;
                case '-':
                    if (idx + 8 < len && at(idx + 1, "Infinity")) {
                        next = idx + 9;
                        return Double.NEGATIVE_INFINITY;
                    }
                    break;
                default:
                    break;
            }
            return matchNumber(idx);
        }

        static boolean digit(int c) {
            return c >= '0' && c <= '9';
        }

        Object matchNumber(int start) throws StopIteration, ValueError {
            int idx = start;
            if (doc[idx] == '-') {
                idx++;
                if (idx > endIdx) {
                    throw new StopIteration(start);
                }
            }
            if (doc[idx] >= '1' && doc[idx] <= '9') {
                idx++;
                while (idx <= endIdx && digit(doc[idx])) {
                    idx++;
                }
            } else if (doc[idx] == '0') {
                idx++;
            } else {
                throw new StopIteration(start);
            }
            boolean isFloat = false;
            if (idx < endIdx && doc[idx] == '.' && digit(doc[idx + 1])) {
                isFloat = true;
                idx += 2;
                while (idx <= endIdx && digit(doc[idx])) {
                    idx++;
                }
            }
            if (idx < endIdx && (doc[idx] == 'e' || doc[idx] == 'E')) {
                int eStart = idx;
                idx++;
                if (idx < endIdx && (doc[idx] == '-' || doc[idx] == '+')) {
                    idx++;
                }
                while (idx <= endIdx && digit(doc[idx])) {
                    idx++;
                }
                if (digit(doc[idx - 1])) {
                    isFloat = true;
                } else {
                    idx = eStart;
                }
            }
            StringBuilder sb = new StringBuilder(idx - start);
            for (int i = start; i < idx; i++) {
                sb.append((char) doc[i]);
            }
            next = idx;
            String text = sb.toString();
            if (isFloat) {
                return Double.parseDouble(text);
            }
            int digits = text.length() - (text.charAt(0) == '-' ? 1 : 0);
            if (digits > 4300) {
                throw new ValueError("Exceeds the limit (4300 digits) for integer string conversion: value has "
                        + digits + " digits; use sys.set_int_max_str_digits() to increase the limit");
            }
            if (digits <= 18) {
                return Long.parseLong(text);
            }
            BigInteger big = new BigInteger(text);
            return big.bitLength() < 64 ? (Object) big.longValue() : big;
        }

        static int hexDigit(int c) {
            if (c >= '0' && c <= '9') {
                return c - '0';
            }
            if (c >= 'a' && c <= 'f') {
                return c - 'a' + 10;
            }
            if (c >= 'A' && c <= 'F') {
                return c - 'A' + 10;
            }
            return -1;
        }

        PyStr scanString(int end) throws JsonDecodeError {
            int begin = end - 1;
            PyText.CodePoints out = null;
            while (true) {
                int c = 0;
                int nxt;
                for (nxt = end; nxt < len; nxt++) {
                    c = doc[nxt];
                    if (c == '"' || c == '\\') {
                        break;
                    }
                    if (c <= 0x1f) {
                        throw new JsonDecodeError("Invalid control character at", doc, nxt);
                    }
                }
                if (nxt >= len) {
                    c = nxt == end ? 0 : c;
                }
                if (c == '"' && nxt < len && out == null) {
                    next = nxt + 1;
                    return new PyStr(Arrays.copyOfRange(doc, end, nxt));
                }
                if (nxt >= len || (c != '"' && c != '\\')) {
                    throw new JsonDecodeError("Unterminated string starting at", doc, begin);
                }
                if (out == null) {
                    out = new PyText.CodePoints();
                }
                for (int i = end; i < nxt; i++) {
                    out.add(doc[i]);
                }
                nxt++;
                if (c == '"') {
                    end = nxt;
                    break;
                }
                if (nxt == len) {
                    throw new JsonDecodeError("Unterminated string starting at", doc, begin);
                }
                c = doc[nxt];
                if (c != 'u') {
                    end = nxt + 1;
                    switch (c) {
                        case '"': case '\\': case '/': break;
                        case 'b': c = '\b'; break;
                        case 'f': c = '\f'; break;
                        case 'n': c = '\n'; break;
                        case 'r': c = '\r'; break;
                        case 't': c = '\t'; break;
                        default: c = 0;
                    }
                    if (c == 0) {
                        throw new JsonDecodeError("Invalid \\escape", doc, end - 2);
                    }
                } else {
                    c = 0;
                    nxt++;
                    end = nxt + 4;
                    if (end >= len) {
                        throw new JsonDecodeError("Invalid \\uXXXX escape", doc, nxt - 1);
                    }
                    for (; nxt < end; nxt++) {
                        int d = hexDigit(doc[nxt]);
                        if (d < 0) {
                            throw new JsonDecodeError("Invalid \\uXXXX escape", doc, end - 5);
                        }
                        c = (c << 4) | d;
                    }
                    if (c >= 0xD800 && c <= 0xDBFF && end + 6 < len && doc[nxt] == '\\' && doc[nxt + 1] == 'u') {
                        nxt += 2;
                        int c2 = 0;
                        end += 6;
                        for (; nxt < end; nxt++) {
                            int d = hexDigit(doc[nxt]);
                            if (d < 0) {
                                throw new JsonDecodeError("Invalid \\uXXXX escape", doc, end - 5);
                            }
                            c2 = (c2 << 4) | d;
                        }
                        if (c2 >= 0xDC00 && c2 <= 0xDFFF) {
                            c = 0x10000 + (((c - 0xD800) << 10) | (c2 - 0xDC00));
                        } else {
                            end -= 6;
                        }
                    }
                }
                out.add(c);
            }
            next = end;
            return new PyStr(out.toArray());
        }

        Map<PyStr, Object> parseObject(int idx, int depth) throws StopIteration, JsonDecodeError, ValueError {
            Map<PyStr, Object> obj = new LinkedHashMap<>();
            idx = skipWhitespace(idx);
            if (idx > endIdx || doc[idx] != '}') {
                while (true) {
                    if (idx > endIdx || doc[idx] != '"') {
                        throw new JsonDecodeError("Expecting property name enclosed in double quotes", doc, idx);
                    }
                    PyStr key = scanString(idx + 1);
                    idx = skipWhitespace(next);
                    if (idx > endIdx || doc[idx] != ':') {
                        throw new JsonDecodeError("Expecting ':' delimiter", doc, idx);
                    }
                    idx = skipWhitespace(idx + 1);
                    Object value = scanOnce(idx, depth);
                    obj.put(key, value);
                    idx = skipWhitespace(next);
                    if (idx <= endIdx && doc[idx] == '}') {
                        break;
                    }
                    if (idx > endIdx || doc[idx] != ',') {
                        throw new JsonDecodeError("Expecting ',' delimiter", doc, idx);
                    }
                    idx = skipWhitespace(idx + 1);
                }
            }
            next = idx + 1;
            return obj;
        }

        List<Object> parseArray(int idx, int depth) throws StopIteration, JsonDecodeError, ValueError {
            List<Object> list = new ArrayList<>();
            idx = skipWhitespace(idx);
            if (idx > endIdx || doc[idx] != ']') {
                while (true) {
                    list.add(scanOnce(idx, depth));
                    idx = skipWhitespace(next);
                    if (idx <= endIdx && doc[idx] == ']') {
                        break;
                    }
                    if (idx > endIdx || doc[idx] != ',') {
                        throw new JsonDecodeError("Expecting ',' delimiter", doc, idx);
                    }
                    idx = skipWhitespace(idx + 1);
                }
            }
            next = idx + 1;
            return list;
        }
    }
}
