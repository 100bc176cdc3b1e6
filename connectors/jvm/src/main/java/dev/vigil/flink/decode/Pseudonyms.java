package dev.vigil.flink.decode;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.GeneralSecurityException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * Entity-id pseudonyms, byte for byte connectors/privacy.py's {@code pseudonym}: {@code "p-"} + the
 * first 20 hex digits of HMAC-SHA256(secret, UTF-8 of the id); and the secret, read as
 * vigil.settings.read_pseudonym_secret reads it (never from the job graph: only a file's path travels).
 */
public final class Pseudonyms {
    public static final String SECRET_ENV = "VIGIL_PSEUDONYM_SECRET";
    public static final String SECRET_FILE_ENV = "VIGIL_PSEUDONYM_SECRET_FILE";
    private static final char[] HEX = "0123456789abcdef".toCharArray();
    private static final int CACHE_LIMIT = 100_000;

    private final Mac mac;
    private final Map<String, String> cache = new HashMap<>();

    public Pseudonyms(byte[] secret) {
        try {
            mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(secret, "HmacSHA256"));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is not available", e);
        }
    }

    /** The pseudonym of {@code entity} (cached: an entity's pseudonym never changes). */
    public String of(String entity) {
        String value = cache.get(entity);
        if (value == null) {
            if (cache.size() > CACHE_LIMIT) {
                cache.clear();
            }
            byte[] digest = mac.doFinal(entity.getBytes(StandardCharsets.UTF_8));
            char[] out = new char[22];
            out[0] = 'p';
            out[1] = '-';
            for (int i = 0; i < 10; i++) {
                out[2 + 2 * i] = HEX[(digest[i] >> 4) & 0xf];
                out[3 + 2 * i] = HEX[digest[i] & 0xf];
            }
            value = new String(out);
            cache.put(entity, value);
        }
        return value;
    }

    /**
     * The secret: {@code VIGIL_PSEUDONYM_SECRET} if set and not empty, else the first of the job's
     * {@code secretFile} and {@code VIGIL_PSEUDONYM_SECRET_FILE} that is a file (its text, stripped).
     * The error names what is missing, never the secret.
     */
    public static byte[] readSecret(String secretFile, Map<String, String> env) {
        String value = env.get(SECRET_ENV);
        if (value != null && !value.isEmpty()) {
            return value.getBytes(StandardCharsets.UTF_8);
        }
        List<Path> candidates = new ArrayList<>();
        for (String p : new String[] {secretFile, env.get(SECRET_FILE_ENV)}) {
            if (p != null && !p.isEmpty()) {
                candidates.add(Paths.get(p));
            }
        }
        for (Path path : candidates) {
            if (Files.isRegularFile(path)) {
                byte[] raw;
                try {
                    raw = Files.readAllBytes(path);
                } catch (IOException e) {
                    throw new IllegalStateException("cannot read the pseudonymisation secret file " + path + ": "
                            + e.getMessage(), null);
                }
                String text;
                try {
                    int[] cps = PyText.decodeUtf8(raw, 0, raw.length, PyText.Errors.STRICT);
                    text = PyText.strip(PyText.fromCodePoints(cps, 0, cps.length));
                } catch (PyText.UnicodeDecodeError e) {
                    throw new IllegalStateException("the pseudonymisation secret file " + path + " is not UTF-8 text");
                }
                if (text.isEmpty()) {
                    throw new IllegalStateException("the pseudonymisation secret file " + path + " is empty");
                }
                return text.getBytes(StandardCharsets.UTF_8);
            }
        }
        StringBuilder where = new StringBuilder();
        for (Path p : candidates) {
            where.append(where.length() > 0 ? " or " : "").append(p);
        }
        throw new IllegalStateException("no pseudonymisation secret: "
                + (where.length() > 0 ? where : "no secret file is configured") + " does not exist and " + SECRET_ENV
                + " is not set (`python -m stack setup` creates <home>/secrets/pseudonym.key)");
    }
}
