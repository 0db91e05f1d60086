package com.fkod.sdk;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public class JsonTest {
    @Test
    public void parsesNestedValuesInOrder() {
        Map<String, Object> object = Json.parseObject(
                " {\"b\": [1, true, null, {\"c\": \"d\"}], \"a\": false} ");

        Check.equal(List.of("b", "a"), List.copyOf(object.keySet()), "key order");
        List<?> array = (List<?>) object.get("b");
        Check.equal(1L, array.get(0), "integer");
        Check.equal(Boolean.TRUE, array.get(1), "true");
        Check.isTrue(array.get(2) == null, "null is parsed as Java null");
        Check.equal(Map.of("c", "d"), array.get(3), "nested object");
        Check.equal(Boolean.FALSE, object.get("a"), "false");
    }

    @Test
    public void decodesUnicodeEscapesAndSurrogatePairs() {
        Check.equal("caf\u00e9", Json.parse("\"caf\\u00e9\""), "BMP escape");
        Check.equal("caf\u00e9", Json.parse("\"caf\u00e9\""), "raw non-ASCII");
        String emoji = (String) Json.parse("\"\\ud83d\\ude00\"");
        Check.equal(1, emoji.codePointCount(0, emoji.length()), "code points of a surrogate pair");
        Check.equal(0x1F600, emoji.codePointAt(0), "code point of a surrogate pair");
        Check.equal("\"\\/\b\f\n\r\t", Json.parse("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), "short escapes");
        Check.equal("A\u0000B", Json.parse("\"A\\u0000B\""), "escaped NUL");
    }

    @Test
    public void parsesNumbersExactly() {
        Check.equal(0L, Json.parse("0"), "zero");
        Check.equal(0L, Json.parse("-0"), "negative zero as an integer");
        Check.equal(Long.MAX_VALUE, Json.parse("9223372036854775807"), "largest long");
        Check.equal(Long.MIN_VALUE, Json.parse("-9223372036854775808"), "smallest long");
        Check.equal(new BigInteger("9223372036854775808"), Json.parse("9223372036854775808"),
                "integer above long");
        Check.equal(1.5, Json.parse("1.5"), "fraction");
        Check.equal(-0.0025, Json.parse("-2.5e-3"), "negative exponent");
        Check.equal(1e21, Json.parse("1E+21"), "exponent with sign");
        Check.equal(new BigDecimal("1e400"), Json.parse("1e400"), "beyond double range");
    }

    @Test
    public void rejectsInvalidJson() {
        String[] invalid = {"", "01", "1.", "-", "+1", ".5", "1e", "[1,]", "{\"a\":1,}", "{a:1}",
            "\"\\x\"", "\"\\u12G4\"", "\"unterminated", "tru", "nul", "\"tab\there\"", "1 2",
            "[1 2]", "{\"a\" 1}", "'a'", "[", "NaN"};
        for (String text : invalid) {
            Check.raises(Json.JsonException.class, () -> Json.parse(text));
        }
        String deep = "[".repeat(Json.MAX_DEPTH + 2) + "]".repeat(Json.MAX_DEPTH + 2);
        Check.raises(Json.JsonException.class, () -> Json.parse(deep));
    }

    @Test
    public void writesWhatItParses() {
        Map<String, Object> value = new LinkedHashMap<>();
        value.put("text", "quote \" backslash \\ newline \n control \u0001 emoji \ud83d\ude00");
        value.put("separator", "\u2028");
        value.put("numbers", List.of(0L, -7L, 1.25, new BigInteger("123456789012345678901234")));
        value.put("nothing", null);
        value.put("nested", Map.of("yes", true));

        String written = Json.write(value);

        Check.equal(value, Json.parse(written), "round trip");
        Check.isTrue(written.contains("\\u0001"), "control characters are escaped: " + written);
        Check.isTrue(written.contains("\\u2028"), "U+2028 is escaped: " + written);
        Check.isTrue(written.startsWith("{\"text\":"), "keys keep their order: " + written);
    }

    @Test
    public void refusesToWriteNonFiniteNumbers() {
        Check.raises(IllegalArgumentException.class, () -> Json.write(List.of(Double.NaN)));
        Check.raises(IllegalArgumentException.class,
                () -> Json.write(Map.of("x", Double.POSITIVE_INFINITY)));
        Check.raises(IllegalArgumentException.class, () -> Json.write(new Object()));
    }
}
