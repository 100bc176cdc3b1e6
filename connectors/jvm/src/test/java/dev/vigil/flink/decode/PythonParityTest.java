package dev.vigil.flink.decode;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Expected values are CPython 3.11's own output (printed by the interpreter, pasted here):
 * pseudonyms of connectors/privacy.py, reprs, json.loads messages, codec errors, and
 * udfs/preprocess.DecodeTelemetry's reasons. tests/jobs/test_jvm_decode.py compares the two
 * implementations live, on many more records, through Flink.
 */
class PythonParityTest {
    private static byte[] hex(String s) {
        return HexFormat.of().parseHex(s);
    }

    @Test
    void pseudonymsAreConnectorsPrivacys() {
        Pseudonyms p = new Pseudonyms("unit-secret".getBytes(StandardCharsets.UTF_8));
        assertEquals("p-2fd5a0193f4f1fdf3c44", p.of("VIN-123"));
        assertEquals("p-6a41f928b0de653b6f3f", p.of("veh-\u00e9\uD83D\uDE00"));
        assertEquals("p-9371154bf516e3b74f69", new Pseudonyms("s\u00e9cret".getBytes(StandardCharsets.UTF_8)).of("x"));
    }

    @Test
    void floatReprIsShortestRoundTrip() {
        double[] values = {0.1, 1e16, 1e15, 123456789012345680.0, 1.5e-5, 0.0001, 5e-324, 1.7976931348623157e308, -2.5,
            100.0, Math.pow(2, -44), 9007199254740993.0, 1e22, 1e23, Double.NaN, Double.NEGATIVE_INFINITY, -0.0};
        String[] python = {"0.1", "1e+16", "1000000000000000.0", "1.2345678901234568e+17", "1.5e-05", "0.0001", "5e-324",
            "1.7976931348623157e+308", "-2.5", "100.0", "5.684341886080802e-14", "9007199254740992.0", "1e+22", "1e+23",
            "nan", "-inf", "-0.0"};
        for (int i = 0; i < values.length; i++) {
            assertEquals(python[i], PyText.reprFloat(values[i]));
        }
    }

    @Test
    void strAndBytesRepr() {
        assertEquals("\"it's\"", PyText.reprStr("it's"));
        assertEquals("'say \"hi\"'", PyText.reprStr("say \"hi\""));
        assertEquals("'both \\' and \"'", PyText.reprStr("both ' and \""));
        assertEquals("'\\x00\\t\\n\\x7f\\x85\\xa0\\u2028\\ud800\uD83D\uDE00\u00e9\\\\'",
                PyText.reprStr(new int[] {0, 9, 10, 0x7f, 0x85, 0xa0, 0x2028, 0xd800, 0x1F600, 0xe9, '\\'}));
        assertEquals("b\"a'b\\x00\\xff\\\\\"", PyText.reprBytes(hex("6127620 0ff5c".replace(" ", "")), 0, 6));
        byte[] mixed = "a'\"b".getBytes(StandardCharsets.US_ASCII);
        assertEquals("b'a\\'\"b'", PyText.reprBytes(mixed, 0, mixed.length));
    }

    @Test
    void jsonDecodeErrors() {
        Map<String, String> cases = new HashMap<>();
        cases.put("", "Expecting value: line 1 column 1 (char 0)");
        cases.put("[", "Expecting value: line 1 column 2 (char 1)");
        cases.put("{\"a\":1,}", "Expecting property name enclosed in double quotes: line 1 column 8 (char 7)");
        cases.put("[1,]", "Expecting value: line 1 column 4 (char 3)");
        cases.put("{\"a\" 1}", "Expecting ':' delimiter: line 1 column 6 (char 5)");
        cases.put("\"\\x\"", "Invalid \\escape: line 1 column 2 (char 1)");
        cases.put("\"\\u12\"", "Invalid \\uXXXX escape: line 1 column 3 (char 2)");
        cases.put("{\"a\":1}x", "Extra data: line 1 column 8 (char 7)");
        cases.put("\n\n {\"a\"\n:", "Expecting value: line 4 column 2 (char 9)");
        cases.put("\"abc", "Unterminated string starting at: line 1 column 1 (char 0)");
        cases.put("[1 2]", "Expecting ',' delimiter: line 1 column 4 (char 3)");
        cases.put("\"\t\"", "Invalid control character at: line 1 column 2 (char 1)");
        cases.put("01", "Extra data: line 1 column 2 (char 1)");
        for (Map.Entry<String, String> c : cases.entrySet()) {
            PyJson.JsonDecodeError e = assertThrows(PyJson.JsonDecodeError.class,
                    () -> PyJson.loads(c.getKey().getBytes(StandardCharsets.UTF_8)), c.getKey());
            assertEquals(c.getValue(), e.getMessage(), c.getKey());
        }
    }

    @Test
    void utf8Errors() {
        PyText.UnicodeDecodeError e = assertThrows(PyText.UnicodeDecodeError.class,
                () -> PyText.decodeUtf8(hex("e080"), 0, 2, PyText.Errors.STRICT));
        assertEquals("UnicodeDecodeError('utf-8', b'\\xe0\\x80', 0, 1, 'invalid continuation byte')", e.repr());
        assertEquals("'utf-8' codec can't decode byte 0xe0 in position 0: invalid continuation byte", e.str());
        e = assertThrows(PyText.UnicodeDecodeError.class,
                () -> PyText.decodeUtf8(hex("6162f09080"), 0, 5, PyText.Errors.STRICT));
        assertEquals("UnicodeDecodeError('utf-8', b'ab\\xf0\\x90\\x80', 2, 5, 'unexpected end of data')", e.repr());
        assertEquals("'utf-8' codec can't decode bytes in position 2-4: unexpected end of data", e.str());
    }

    @Test
    void isoTimes() throws Exception {
        String[] texts = {"2026-01-01T00:00:00+00:00", "2026-W01-1", "20260101T000000.5+01:00", "2026-01-01T12:34:56:78",
            "0001-01-01T00:00:00+01:00"};
        long[] python = {1767225600000L, 1766966400000L, 1767222000500L, 1767270896780L, -62135600400000L};
        for (int i = 0; i < texts.length; i++) {
            assertEquals(python[i], IsoTime.epochMillis(PyText.codePoints(texts[i])), texts[i]);
        }
        assertThrows(IsoTime.Invalid.class, () -> IsoTime.epochMillis(PyText.codePoints("2026-13-01")));
        assertThrows(IsoTime.Invalid.class, () -> IsoTime.epochMillis(PyText.codePoints("2026-01-01T10:00+24:00")));
    }

    private static final String SCHEMA = "{\"type\": \"record\", \"name\": \"Reading\", \"namespace\": \"unit\", "
            + "\"vigil.entity\": \"id\", \"vigil.time\": \"t\", \"vigil.label\": \"label\", \"fields\": ["
            + "{\"name\": \"id\", \"type\": \"string\"}, {\"name\": \"t\", \"type\": {\"type\": \"long\", "
            + "\"logicalType\": \"timestamp-millis\"}}, {\"name\": \"x\", \"type\": \"double\"}, "
            + "{\"name\": \"n\", \"type\": \"long\"}, {\"name\": \"label\", \"type\": [\"null\", \"string\"]}]}";
    private static final String ID = "unit.Reading@9e9a17c955f34189";

    @Test
    @SuppressWarnings("unchecked")
    void decodeTelemetryReasons() {
        RecordSchema schema = RecordSchema.parse((Map<String, Object>) PyJson.parseTrusted(SCHEMA));
        TelemetryDecoder d = new TelemetryDecoder(schema, ID, "unit-secret".getBytes(StandardCharsets.UTF_8));
        byte[] h = ID.getBytes(StandardCharsets.UTF_8);
        // payload hex, header, pseudonym, error: DecodeTelemetry's output for the same input
        Object[][] cases = {
            {"0e56494e2d31323380a0d5edee66000000000000f83f0e00", null, "p-2fd5a0193f4f1fdf3c44", null},
            {"0e56494e2d31323380a0d5edee66000000000000f87f0e0206686f74", h, "p-2fd5a0193f4f1fdf3c44",
                "impossible_value: x=nan"},
            {"0a56494e2d3980808080808080808001000000000000f0ff0100", h, "p-bd7fe587cd8c72c4d105",
                "impossible_value: x=-inf"},
            {"0a56494e2d398080808080808080800100000000000000400100", h, "p-bd7fe587cd8c72c4d105",
                "impossible_value: t=4611686018427387904 ms is outside the years 1..9999"},
            {"0e56494e2d", h, null,
                "undecodable: cannot decode 5 bytes as Reading: EOFError('Expected 7 bytes, read 4')"},
            {"0e56494e2d31323380a0d5edee66000000000000f83f0e0001", h, null,
                "undecodable: 1 trailing bytes after a Reading record (wrong schema version?)"},
            {"0e56494e2d31323380a0d5edee66000000000000f83f0e04", h, null,
                "undecodable: cannot decode 24 bytes as Reading: IndexError('list index out of range')"},
            {null, h, null, "undecodable: empty payload"},
            {"0e56494e2d31323380a0d5edee66000000000000f83f0e00", "other@1\u00ff".getBytes(StandardCharsets.ISO_8859_1),
                null, "undecodable: written with schema other@1\uFFFD, this job reads unit.Reading@9e9a17c955f34189"},
        };
        for (Object[] c : cases) {
            TelemetryDecoder.Decoded out = d.decode(c[0] == null ? null : hex((String) c[0]), (byte[]) c[1]);
            assertEquals(c[3], out.error, String.valueOf(c[0]));
            assertEquals(c[2], out.values[0], String.valueOf(c[0]));
        }
        TelemetryDecoder.Decoded ok = d.decode(hex((String) cases[0][0]), null);
        assertArrayEquals(new Object[] {"p-2fd5a0193f4f1fdf3c44", 1767225600000L, 1.5, 7L, null}, ok.values);
        assertNull(d.decode(hex((String) cases[1][0]), h).values[2]);  // NaN leaves as NULL, as from PyFlink
        assertEquals(List.of("x", "n"), List.copyOf(schema.features));
    }

    @Test
    void secretIsReadLikeVigilSettings(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        java.nio.file.Path file = dir.resolve("key");
        java.nio.file.Files.writeString(file, "  abc\u00a0\n");
        assertArrayEquals("abc".getBytes(StandardCharsets.UTF_8), Pseudonyms.readSecret(file.toString(), Map.of()));
        assertArrayEquals("env".getBytes(StandardCharsets.UTF_8),
                Pseudonyms.readSecret(file.toString(), Map.of(Pseudonyms.SECRET_ENV, "env")));
        assertArrayEquals("abc".getBytes(StandardCharsets.UTF_8),
                Pseudonyms.readSecret(dir.resolve("missing").toString(), Map.of(Pseudonyms.SECRET_FILE_ENV, file.toString())));
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> Pseudonyms.readSecret(dir.resolve("missing").toString(), Map.of()));
        assertEquals(true, e.getMessage().startsWith("no pseudonymisation secret: " + dir.resolve("missing")));
    }
}
