package dev.vigil.flink.decode;

import java.io.ByteArrayOutputStream;

/**
 * {@code datetime.datetime.fromisoformat(text)} of CPython 3.11 (its C implementation), reduced to
 * what Vigil needs: epoch milliseconds of the instant (a naive time read as UTC), floored, or
 * "not a time" (Python raises ValueError). Ported from {@code Modules/_datetimemodule.c}: the
 * parser works on the UTF-8 bytes with a NUL terminator, as CPython's does.
 */
final class IsoTime {
    private IsoTime() {}

    /** Why a string is not an ISO time (the Python decode only says that it is not one). */
    static final class Invalid extends Exception {
        Invalid() {
            super(null, null, false, false);
        }
    }

    private static final int PAD = 16;

    /** Epoch millis of {@code fromisoformat(text)} (naive = UTC), floor-divided; Invalid if Python raises. */
    static long epochMillis(int[] text) throws Invalid {
        if (text.length < 7) {
            throw new Invalid();
        }
        int[] cps = text.clone();
        for (int pos : new int[] {7, 8, 10}) {
            if (pos > cps.length) {
                break;
            }
            if (pos < cps.length && cps[pos] >= 0xD800 && cps[pos] <= 0xDFFF) {
                cps[pos] = 'T';
                break;
            }
        }
        ByteArrayOutputStream utf8 = new ByteArrayOutputStream(cps.length + PAD);
        for (int cp : cps) {
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                throw new Invalid();  // not encodable as UTF-8
            }
            byte[] b = new String(Character.toChars(cp)).getBytes(java.nio.charset.StandardCharsets.UTF_8);
            utf8.write(b, 0, b.length);
        }
        int len = utf8.size();
        utf8.write(new byte[PAD], 0, PAD);
        byte[] s = utf8.toByteArray();

        int sep = separator(s, len);
        if (sep < 0) {
            throw new Invalid();
        }
        int[] date = parseDate(s, 0, sep);
        int[] time = {0, 0, 0, 0};
        int tzSeconds = 0;
        int tzMicros = 0;
        boolean aware = false;
        if (len > sep) {
            int p = sep;
            int lead = s[p] & 0xff;
            if ((lead & 0x80) == 0) {
                p += 1;
            } else if ((lead & 0xf0) == 0xe0) {
                p += 3;
            } else if ((lead & 0xf0) == 0xf0) {
                p += 4;
            } else {
                p += 2;
            }
            int remaining = len - p;
            int[] tz = new int[2];
            int rv = parseTime(s, p, remaining, time, tz);
            if (rv < 0) {
                throw new Invalid();
            }
            if (rv == 1) {
                aware = true;
                tzSeconds = tz[0];
                tzMicros = tz[1];
            }
        }
        int year = date[0];
        int month = date[1];
        int day = date[2];
        if (year < 1 || year > 9999 || month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) {
            throw new Invalid();
        }
        if (time[0] > 23 || time[1] > 59 || time[2] > 59) {
            throw new Invalid();
        }
        long offsetMicros = 0;
        if (aware && tzSeconds != 0) {
            offsetMicros = tzSeconds * 1_000_000L + tzMicros;
            if (Math.abs(offsetMicros) >= 86_400L * 1_000_000L) {
                throw new Invalid();  // offset must be strictly between -24 h and 24 h
            }
        }
        long days = ymdToOrd(year, month, day) - ymdToOrd(1970, 1, 1);
        long micros = ((days * 86_400L + time[0] * 3600L + time[1] * 60L + time[2]) * 1_000_000L + time[3])
                - offsetMicros;
        return Math.floorDiv(micros, 1000L);
    }

    private static boolean isDigit(byte c) {
        return c >= '0' && c <= '9';
    }

    /** _find_isoformat_datetime_separator. */
    private static int separator(byte[] s, int len) {
        if (len == 7) {
            return 7;
        }
        if (s[4] == '-') {
            if (s[5] == 'W') {
                if (len < 8) {
                    return -1;
                }
                if (len > 8 && s[8] == '-') {
                    if (len == 9) {
                        return -1;
                    }
                    if (len > 10 && isDigit(s[10])) {
                        return 8;
                    }
                    return 10;
                }
                return 8;
            }
            return 10;
        }
        if (s[4] == 'W') {
            int idx = 7;
            for (; idx < len; ++idx) {
                if (!isDigit(s[idx])) {
                    break;
                }
            }
            if (idx < 9) {
                return idx;
            }
            return idx % 2 == 0 ? 7 : 8;
        }
        return 8;
    }

    /** parse_digits: the value, or -1; advances pos[0]. */
    private static int digits(byte[] s, int[] pos, int count) {
        int value = 0;
        for (int i = 0; i < count; i++) {
            int d = s[pos[0]++] - '0';
            if (d < 0 || d > 9) {
                return -1;
            }
            value = value * 10 + d;
        }
        return value;
    }

    /** parse_isoformat_date on s[0:len]: {year, month, day}; Invalid on failure. */
    private static int[] parseDate(byte[] s, int from, int len) throws Invalid {
        int[] p = {from};
        int year = digits(s, p, 4);
        if (year < 0) {
            throw new Invalid();
        }
        boolean sep = s[p[0]] == '-';
        if (sep) {
            p[0]++;
        }
        if (s[p[0]] == 'W') {
            p[0]++;
            int week = digits(s, p, 2);
            if (week < 0) {
                throw new Invalid();
            }
            int isoDay;
            if (p[0] - from < len) {
                if (sep && s[p[0]++] != '-') {
                    throw new Invalid();
                }
                isoDay = digits(s, p, 1);
                if (isoDay < 0) {
                    throw new Invalid();
                }
            } else {
                isoDay = 1;
            }
            return isoToYmd(year, week, isoDay);
        }
        int month = digits(s, p, 2);
        if (month < 0) {
            throw new Invalid();
        }
        if (sep && s[p[0]++] != '-') {
            throw new Invalid();
        }
        int day = digits(s, p, 2);
        if (day < 0) {
            throw new Invalid();
        }
        return new int[] {year, month, day};
    }

    /** parse_hh_mm_ss_ff on s[from:end]: 0 = end of string, 1 = more follows, <0 = error; vals = h, m, s, us. */
    private static int parseHhMmSsFf(byte[] s, int from, int end, int[] vals) {
        vals[0] = vals[1] = vals[2] = vals[3] = 0;
        int[] p = {from};
        boolean hasSep = true;
        for (int i = 0; i < 3; ++i) {
            int v = digits(s, p, 2);
            if (v < 0) {
                return -3;
            }
            vals[i] = v;
            byte c = s[p[0]++];
            if (i == 0) {
                hasSep = c == ':';
            }
            if (p[0] >= end) {
                return c != 0 ? 1 : 0;
            } else if (hasSep && c == ':') {
                continue;
            } else if (c == '.' || c == ',') {
                break;
            } else if (!hasSep) {
                p[0]--;
            } else {
                return -4;
            }
        }
        int remains = end - p[0];
        int toParse = Math.min(remains, 6);
        int us = digits(s, p, toParse);
        if (us < 0) {
            return -3;
        }
        int[] correction = {100000, 10000, 1000, 100, 10};
        if (toParse < 6) {
            us *= correction[toParse - 1];
        }
        vals[3] = us;
        while (isDigit(s[p[0]])) {
            ++p[0];
        }
        return s[p[0]] != 0 ? 1 : 0;
    }

    /** parse_isoformat_time: 0 = naive, 1 = with offset (tz = seconds, micros), <0 = error. */
    private static int parseTime(byte[] s, int from, int len, int[] time, int[] tz) {
        int end = from + len;
        int tzPos = from;
        do {
            if (s[tzPos] == 'Z' || s[tzPos] == '+' || s[tzPos] == '-') {
                break;
            }
        } while (++tzPos < end);
        int rv = parseHhMmSsFf(s, from, tzPos, time);
        if (rv < 0) {
            return rv;
        } else if (tzPos == end) {
            return rv == 1 ? -5 : 0;
        }
        if (s[tzPos] == 'Z') {
            tz[0] = 0;
            tz[1] = 0;
            return s[tzPos + 1] != 0 ? -5 : 1;
        }
        int sign = s[tzPos] == '-' ? -1 : 1;
        tzPos++;
        int[] t = new int[4];
        rv = parseHhMmSsFf(s, tzPos, end, t);
        tz[0] = sign * (t[0] * 3600 + t[1] * 60 + t[2]);
        tz[1] = sign * t[3];
        return rv != 0 ? -5 : 1;
    }

    private static boolean isLeap(int year) {
        return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    }

    private static final int[] DAYS_IN_MONTH = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    private static final int[] DAYS_BEFORE_MONTH = {0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};

    private static int daysInMonth(int year, int month) {
        return month == 2 && isLeap(year) ? 29 : DAYS_IN_MONTH[month];
    }

    private static long ymdToOrd(int year, int month, int day) {
        long y = year - 1;
        long before = y * 365 + Math.floorDiv(y, 4) - Math.floorDiv(y, 100) + Math.floorDiv(y, 400);
        int dbm = DAYS_BEFORE_MONTH[month] + (month > 2 && isLeap(year) ? 1 : 0);
        return before + dbm + day;
    }

    /** iso_to_ymd plus the range check the datetime constructor makes. */
    private static int[] isoToYmd(int isoYear, int week, int day) throws Invalid {
        if (isoYear < 1 || isoYear > 9999) {
            throw new Invalid();  // outside what a datetime holds (Python fails on it too)
        }
        if (week <= 0 || week >= 53) {
            boolean outOfRange = true;
            if (week == 53) {
                long firstWeekday = (ymdToOrd(isoYear, 1, 1) + 6) % 7;  // Monday = 0
                if (firstWeekday == 3 || (firstWeekday == 2 && isLeap(isoYear))) {
                    outOfRange = false;
                }
            }
            if (outOfRange) {
                throw new Invalid();
            }
        }
        if (day <= 0 || day >= 8) {
            throw new Invalid();
        }
        long firstDay = ymdToOrd(isoYear, 1, 1);
        long firstWeekday = (firstDay + 6) % 7;
        long week1Monday = firstDay - firstWeekday;
        if (firstWeekday > 3) {
            week1Monday += 7;
        }
        long ordinal = week1Monday + (week - 1) * 7L + day - 1;
        java.time.LocalDate date = java.time.LocalDate.of(1, 1, 1).plusDays(ordinal - 1);
        return new int[] {date.getYear(), date.getMonthValue(), date.getDayOfMonth()};
    }
}
