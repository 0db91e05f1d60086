package com.fkod.sdk;

import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Verification of a delivery that the platform's own signing code signed. */
public class WebhookTest {
    private final String secret;
    private final byte[] body;
    private final Map<String, String> headers = new LinkedHashMap<>();
    private final Instant signedAt;

    public WebhookTest() {
        Map<String, Object> sample = Json.parseObject(Check.requireEnv("FKOD_SIGNED_WEBHOOK"));
        secret = Check.requireEnv("FKOD_WEBHOOK_SECRET");
        body = ((String) sample.get("body")).getBytes(StandardCharsets.UTF_8);
        Fields.object(sample.get("headers")).forEach((name, value) -> headers.put(name, (String) value));
        signedAt = Instant.ofEpochSecond(((Number) sample.get("timestamp")).longValue());
    }

    private Map<String, String> headersWithout(String... names) {
        Map<String, String> copy = new LinkedHashMap<>(headers);
        for (String name : names) {
            copy.remove(name);
        }
        return copy;
    }

    private Map<String, String> standardOnly() {
        return headersWithout("X-FKOD-Signature");
    }

    private Map<String, String> fkodOnly() {
        return headersWithout("webhook-id", "webhook-timestamp", "webhook-signature");
    }

    private WebhookVerificationException rejected(Map<String, String> headers, byte[] body,
                                                  String secret, Instant now) {
        return Check.raises(WebhookVerificationException.class,
                () -> Webhooks.verify(secret, headers, body, Webhooks.DEFAULT_TOLERANCE, now));
    }

    @Test
    public void validSampleVerifies() {
        for (Map<String, String> variant : List.of(headers, standardOnly(), fkodOnly())) {
            WebhookEvent event = Webhooks.verify(secret, variant, body);
            Check.equal("evt_sdk_sample", event.id(), "event id with " + variant.keySet());
            Check.equal("user.created", event.type(), "event type");
            Check.equal(1764900000L, event.created(), "created");
            Check.equal(false, event.livemode(), "livemode");
            Check.equal("user_1", event.data().get("id"), "data.id");
        }
    }

    @Test
    public void headerNamesAreCaseInsensitive() {
        Map<String, String> upper = new LinkedHashMap<>();
        standardOnly().forEach((name, value) -> upper.put(name.toUpperCase(), value));
        Check.equal("evt_sdk_sample", Webhooks.verify(secret, upper, body).id(), "event id");
    }

    @Test
    public void tamperedBodyIsRejected() {
        byte[] tampered = new String(body, StandardCharsets.UTF_8).replace("user_1", "user_2")
                .getBytes(StandardCharsets.UTF_8);
        Check.equal(WebhookVerificationException.SIGNATURE_MISMATCH,
                rejected(standardOnly(), tampered, secret, Instant.now()).reason(), "standard");
        Check.equal(WebhookVerificationException.SIGNATURE_MISMATCH,
                rejected(fkodOnly(), tampered, secret, Instant.now()).reason(), "X-FKOD-Signature");
    }

    @Test
    public void wrongSecretIsRejected() {
        byte[] random = new byte[32];
        new SecureRandom().nextBytes(random);
        String other = "whsec_" + Base64.getEncoder().encodeToString(random);

        Check.equal(WebhookVerificationException.SIGNATURE_MISMATCH,
                rejected(headers, body, other, Instant.now()).reason(), "standard");
        Check.equal(WebhookVerificationException.SIGNATURE_MISMATCH,
                rejected(fkodOnly(), body, other, Instant.now()).reason(), "X-FKOD-Signature");
        Check.raises(IllegalArgumentException.class, () -> Webhooks.verify("secret", headers, body));
    }

    @Test
    public void oldOrFutureTimestampIsRejected() {
        for (long offset : new long[] {301, -301}) {
            Instant now = signedAt.plusSeconds(offset);
            Check.equal(WebhookVerificationException.TIMESTAMP_OUTSIDE_TOLERANCE,
                    rejected(standardOnly(), body, secret, now).reason(), "standard, " + offset + " s");
            Check.equal(WebhookVerificationException.TIMESTAMP_OUTSIDE_TOLERANCE,
                    rejected(fkodOnly(), body, secret, now).reason(), "X-FKOD-Signature, " + offset + " s");
        }
        Webhooks.verify(secret, headers, body, Webhooks.DEFAULT_TOLERANCE, signedAt.plusSeconds(299));
        Webhooks.verify(secret, headers, body, Duration.ofHours(1), signedAt.plusSeconds(1800));
    }

    @Test
    public void anyRotatedSignatureMatches() {
        String staleStandard = "v1," + Base64.getEncoder().encodeToString(new byte[32]);
        Map<String, String> standard = standardOnly();
        standard.put("webhook-signature", staleStandard + " " + headers.get("webhook-signature"));
        Webhooks.verify(secret, standard, body);

        Map<String, String> fkod = fkodOnly();
        fkod.put("X-FKOD-Signature", headers.get("X-FKOD-Signature") + ",v1=" + "0".repeat(64));
        Webhooks.verify(secret, fkod, body);

        standard.put("webhook-signature", staleStandard);
        Check.equal(WebhookVerificationException.SIGNATURE_MISMATCH,
                rejected(standard, body, secret, Instant.now()).reason(), "stale signature only");
    }

    @Test
    public void missingAndMalformedHeadersAreRejected() {
        Check.equal(WebhookVerificationException.MISSING_SIGNATURE,
                rejected(Map.of(), body, secret, Instant.now()).reason(), "no headers");
        Check.equal(WebhookVerificationException.MISSING_SIGNATURE,
                rejected(headersWithout("webhook-signature"), body, secret, Instant.now()).reason(),
                "webhook-signature missing");

        Map<String, String> standard = standardOnly();
        standard.put("webhook-signature", "v1");
        Check.equal(WebhookVerificationException.MALFORMED_HEADER,
                rejected(standard, body, secret, Instant.now()).reason(), "entry without comma");

        Map<String, String> fkod = fkodOnly();
        fkod.put("X-FKOD-Signature", "v1=abc");
        Check.equal(WebhookVerificationException.MALFORMED_HEADER,
                rejected(fkod, body, secret, Instant.now()).reason(), "short hex, no t=");

        standard = standardOnly();
        standard.put("webhook-timestamp", "yesterday");
        Check.equal(WebhookVerificationException.MALFORMED_TIMESTAMP,
                rejected(standard, body, secret, Instant.now()).reason(), "timestamp text");
    }
}
