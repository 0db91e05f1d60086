package com.fkod.sdk;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * Verification of webhook deliveries.
 *
 * <p>Every delivery carries two signatures over the exact body bytes: {@code X-FKOD-Signature:
 * t=<unix>,v1=<hex>}, an HMAC-SHA256 keyed with the whole {@code whsec_} secret over
 * {@code "<t>." + body}, and the Standard Webhooks headers {@code webhook-id},
 * {@code webhook-timestamp} and {@code webhook-signature: v1,<base64>}, an HMAC-SHA256 keyed
 * with the base64-decoded part after {@code whsec_} over {@code "<id>.<t>." + body}.
 */
public final class Webhooks {
    /** How far a signature timestamp may be from the receiver's clock, in either direction. */
    public static final Duration DEFAULT_TOLERANCE = Duration.ofSeconds(300);

    private static final String SECRET_PREFIX = "whsec_";
    private static final int MAX_HEADER_LENGTH = 2048;
    private static final int DIGEST_BYTES = 32;

    private Webhooks() {
    }

    /** Verifies a delivery against the current time with the default tolerance. */
    public static WebhookEvent verify(String secret, Map<String, String> headers, byte[] body) {
        return verify(secret, headers, body, DEFAULT_TOLERANCE, Instant.now());
    }

    /**
     * Verifies the signature of a delivery and returns its event.
     *
     * <p>{@code body} must be the raw bytes received, before any JSON decoding. Header names
     * are matched case-insensitively. When the Standard Webhooks headers are present they are
     * verified, otherwise the X-FKOD-Signature header is. During a secret rotation a header
     * carries several signatures, and any match is accepted.
     *
     * @throws WebhookVerificationException when the signature fails, with a reason code
     * @throws IllegalArgumentException for a secret that is not a {@code whsec_} secret
     */
    public static WebhookEvent verify(String secret, Map<String, String> headers, byte[] body,
                                      Duration tolerance, Instant now) {
        byte[] standardKey = decodeSecret(secret);
        String standardSignature = header(headers, "webhook-signature");
        boolean standard = standardSignature != null || header(headers, "webhook-id") != null
                || header(headers, "webhook-timestamp") != null;
        if (standard) {
            verifyStandard(standardKey, headers, body, tolerance, now);
        } else {
            verifyFkod(secret.getBytes(StandardCharsets.UTF_8), header(headers, "X-FKOD-Signature"),
                    body, tolerance, now);
        }

        try {
            return WebhookEvent.fromJson(Json.parse(new String(body, StandardCharsets.UTF_8)));
        } catch (IllegalArgumentException e) {
            throw new FkodException("the webhook body is signed but is not a JSON event", e);
        }
    }

    private static byte[] decodeSecret(String secret) {
        if (secret == null || !secret.startsWith(SECRET_PREFIX)) {
            throw new IllegalArgumentException("a webhook secret starts with " + SECRET_PREFIX);
        }
        String encoded = secret.substring(SECRET_PREFIX.length()).replaceAll("=+$", "");
        byte[] key;
        try {
            // Secrets with or without "=" padding are accepted.
            key = Base64.getDecoder().decode(encoded);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(
                    "the webhook secret after " + SECRET_PREFIX + " is not valid standard base64", e);
        }
        if (key.length == 0) {
            throw new IllegalArgumentException("the webhook secret after " + SECRET_PREFIX + " is empty");
        }
        return key;
    }

    private static void verifyFkod(byte[] key, String header, byte[] body, Duration tolerance,
                                   Instant now) {
        if (header == null || header.isEmpty()) {
            throw new WebhookVerificationException(WebhookVerificationException.MISSING_SIGNATURE,
                    "the X-FKOD-Signature header is missing");
        }
        checkHeaderText("X-FKOD-Signature", header);

        String timestamp = null;
        List<byte[]> candidates = new ArrayList<>();
        for (String item : header.split(",", -1)) {
            String trimmed = item.strip();
            int equals = trimmed.indexOf('=');
            if (equals < 0) {
                throw malformed("the X-FKOD-Signature header has an item without '='");
            }
            String name = trimmed.substring(0, equals);
            String value = trimmed.substring(equals + 1);
            if (name.equals("t")) {
                if (timestamp != null) {
                    throw malformed("the X-FKOD-Signature header has more than one t=");
                }
                timestamp = value;
            } else if (name.equals("v1")) {
                if (!value.matches("[0-9a-fA-F]{64}")) {
                    throw malformed("a v1 signature in X-FKOD-Signature is not 64 hex digits");
                }
                candidates.add(HexFormat.of().parseHex(value));
            }
            // Other names are signature versions this SDK does not know, so they are skipped.
        }
        if (timestamp == null) {
            throw malformed("the X-FKOD-Signature header has no t=");
        }
        checkTimestamp(timestamp, tolerance, now);

        byte[] expected = hmac(key, (timestamp + ".").getBytes(StandardCharsets.US_ASCII), body);
        if (!anyMatches(expected, candidates)) {
            throw new WebhookVerificationException(WebhookVerificationException.SIGNATURE_MISMATCH,
                    "no v1 signature matches the body and timestamp");
        }
    }

    private static void verifyStandard(byte[] key, Map<String, String> headers, byte[] body,
                                       Duration tolerance, Instant now) {
        String messageId = requireHeader(headers, "webhook-id");
        String timestamp = requireHeader(headers, "webhook-timestamp");
        String signatures = requireHeader(headers, "webhook-signature");
        if (messageId.contains(" ") || messageId.contains(",")) {
            throw malformed("the webhook-id header is not a single message id");
        }
        checkTimestamp(timestamp, tolerance, now);

        List<byte[]> candidates = new ArrayList<>();
        for (String entry : signatures.split(" ")) {
            if (entry.isEmpty()) {
                continue;
            }
            int comma = entry.indexOf(',');
            if (comma < 0) {
                throw malformed("a webhook-signature entry has no ',' after its version");
            }
            if (!entry.substring(0, comma).equals("v1")) {
                continue;
            }
            byte[] digest;
            try {
                digest = Base64.getDecoder().decode(entry.substring(comma + 1));
            } catch (IllegalArgumentException e) {
                throw malformed("a v1 signature in webhook-signature is not valid base64");
            }
            if (digest.length != DIGEST_BYTES) {
                throw malformed("a v1 signature in webhook-signature is not a 32-byte HMAC-SHA256");
            }
            candidates.add(digest);
        }

        byte[] prefix = (messageId + "." + timestamp + ".").getBytes(StandardCharsets.US_ASCII);
        if (!anyMatches(hmac(key, prefix, body), candidates)) {
            throw new WebhookVerificationException(WebhookVerificationException.SIGNATURE_MISMATCH,
                    "no v1 signature matches the body, message id and timestamp");
        }
    }

    private static String header(Map<String, String> headers, String name) {
        for (Map.Entry<String, String> entry : headers.entrySet()) {
            if (entry.getKey() != null && entry.getKey().equalsIgnoreCase(name)) {
                return entry.getValue();
            }
        }
        return null;
    }

    private static String requireHeader(Map<String, String> headers, String name) {
        String value = header(headers, name);
        if (value == null || value.isEmpty()) {
            throw new WebhookVerificationException(WebhookVerificationException.MISSING_SIGNATURE,
                    "the " + name + " header is missing");
        }
        checkHeaderText(name, value);
        return value;
    }

    private static void checkHeaderText(String name, String value) {
        if (value.length() > MAX_HEADER_LENGTH) {
            throw malformed("the " + name + " header is longer than " + MAX_HEADER_LENGTH + " characters");
        }
        for (int i = 0; i < value.length(); i++) {
            char c = value.charAt(i);
            if (c < 0x20 || c > 0x7e) {
                throw malformed("the " + name + " header contains a character that is not printable ASCII");
            }
        }
    }

    private static void checkTimestamp(String text, Duration tolerance, Instant now) {
        if (!text.matches("[0-9]{1,15}")) {
            throw new WebhookVerificationException(WebhookVerificationException.MALFORMED_TIMESTAMP,
                    "the signature timestamp is not an integer of Unix seconds");
        }
        long difference = Math.abs(now.getEpochSecond() - Long.parseLong(text));
        if (difference > tolerance.getSeconds()) {
            throw new WebhookVerificationException(
                    WebhookVerificationException.TIMESTAMP_OUTSIDE_TOLERANCE,
                    "the signature timestamp is more than " + tolerance.getSeconds()
                            + " seconds from the current time");
        }
    }

    private static byte[] hmac(byte[] key, byte[] prefix, byte[] body) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            mac.update(prefix);
            return mac.doFinal(body);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is not available", e);
        }
    }

    /** Compares with every candidate in constant time, so the time taken does not show which matched. */
    private static boolean anyMatches(byte[] expected, List<byte[]> candidates) {
        boolean matched = false;
        for (byte[] candidate : candidates) {
            matched |= MessageDigest.isEqual(expected, candidate);
        }
        return matched;
    }

    private static WebhookVerificationException malformed(String message) {
        return new WebhookVerificationException(WebhookVerificationException.MALFORMED_HEADER, message);
    }
}
