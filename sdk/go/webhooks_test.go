package fkod_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	fkod "github.com/fkod/fkod-go"
)

// signedSample is a delivery signed by the platform's own signing code, from
// FKOD_SIGNED_WEBHOOK, with the secret from FKOD_WEBHOOK_SECRET.
type signedSample struct {
	secret    string
	body      []byte
	headers   map[string]string
	timestamp int64
}

func loadSignedSample(t *testing.T) signedSample {
	t.Helper()
	raw := os.Getenv("FKOD_SIGNED_WEBHOOK")
	if raw == "" {
		t.Skip("FKOD_SIGNED_WEBHOOK is not set; run tests/sdk/test_go_sdk.py to get a platform-signed delivery")
	}
	var sample struct {
		Body      string            `json:"body"`
		Headers   map[string]string `json:"headers"`
		Timestamp int64             `json:"timestamp"`
	}
	if err := json.Unmarshal([]byte(raw), &sample); err != nil {
		t.Fatalf("FKOD_SIGNED_WEBHOOK is not valid JSON: %v", err)
	}
	return signedSample{secret: os.Getenv("FKOD_WEBHOOK_SECRET"), body: []byte(sample.Body),
		headers: sample.Headers, timestamp: sample.Timestamp}
}

// header returns the sample's headers without those named in drop, as a server receives them.
func (s signedSample) header(drop ...string) http.Header {
	header := http.Header{}
	for name, value := range s.headers {
		header.Set(name, value)
	}
	for _, name := range drop {
		header.Del(name)
	}
	return header
}

func (s signedSample) at(offset time.Duration) *fkod.WebhookOptions {
	return &fkod.WebhookOptions{Now: func() time.Time {
		return time.Unix(s.timestamp, 0).Add(offset)
	}}
}

func requireReason(t *testing.T, err error, reason string) {
	t.Helper()
	var webhookErr *fkod.WebhookError
	if !errors.As(err, &webhookErr) {
		t.Fatalf("expected *fkod.WebhookError with reason %s, got %T: %v", reason, err, err)
	}
	if webhookErr.Reason != reason {
		t.Errorf("reason = %q, expected %q (%v)", webhookErr.Reason, reason, err)
	}
}

func TestWebhookValidSampleVerifies(t *testing.T) {
	sample := loadSignedSample(t)

	for name, header := range map[string]http.Header{
		"both schemes":      sample.header(),
		"standard webhooks": sample.header("X-FKOD-Signature"),
		"X-FKOD-Signature":  sample.header("webhook-id", "webhook-timestamp", "webhook-signature"),
	} {
		event, err := fkod.VerifyWebhook(sample.secret, header, sample.body, nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if event.ID != "evt_sdk_sample" || event.Type != "user.created" || event.Livemode {
			t.Errorf("%s: event = %+v", name, event)
		}
		var data struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(event.Data, &data); err != nil || data.ID != "user_1" {
			t.Errorf("%s: data = %s", name, event.Data)
		}
	}
}

func TestWebhookTamperedBodyIsRejected(t *testing.T) {
	sample := loadSignedSample(t)
	tampered := []byte(strings.Replace(string(sample.body), "user_1", "user_2", 1))

	_, err := fkod.VerifyWebhook(sample.secret, sample.header(), tampered, nil)
	requireReason(t, err, fkod.ReasonSignatureMismatch)

	_, err = fkod.VerifyWebhook(sample.secret, sample.header("webhook-signature", "webhook-id",
		"webhook-timestamp"), tampered, nil)
	requireReason(t, err, fkod.ReasonSignatureMismatch)
}

func TestWebhookWrongSecretIsRejected(t *testing.T) {
	sample := loadSignedSample(t)
	random := make([]byte, 32)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	other := "whsec_" + base64.StdEncoding.EncodeToString(random)

	_, err := fkod.VerifyWebhook(other, sample.header(), sample.body, nil)
	requireReason(t, err, fkod.ReasonSignatureMismatch)

	_, err = fkod.VerifyWebhook(other, sample.header("webhook-signature"), sample.body, nil)
	requireReason(t, err, fkod.ReasonMissingSignature)

	if _, err := fkod.VerifyWebhook("not-a-secret", sample.header(), sample.body, nil); err == nil {
		t.Errorf("a secret without the whsec_ prefix was accepted")
	}
}

func TestWebhookTimestampTolerance(t *testing.T) {
	sample := loadSignedSample(t)

	for _, offset := range []time.Duration{301 * time.Second, -301 * time.Second} {
		_, err := fkod.VerifyWebhook(sample.secret, sample.header(), sample.body, sample.at(offset))
		requireReason(t, err, fkod.ReasonTimestampOutsideTolerance)
	}
	if _, err := fkod.VerifyWebhook(sample.secret, sample.header(), sample.body,
		sample.at(299*time.Second)); err != nil {
		t.Errorf("a delivery 299 s old was rejected: %v", err)
	}

	options := sample.at(20 * time.Minute)
	options.Tolerance = 30 * time.Minute
	if _, err := fkod.VerifyWebhook(sample.secret, sample.header(), sample.body, options); err != nil {
		t.Errorf("a wider tolerance was not applied: %v", err)
	}
}

func TestWebhookRotatedSignaturesAnyMatches(t *testing.T) {
	sample := loadSignedSample(t)
	bogusStandard := "v1," + base64.StdEncoding.EncodeToString(make([]byte, 32))
	bogusFKOD := "v1=" + strings.Repeat("0", 64)

	header := sample.header("X-FKOD-Signature")
	header.Set("webhook-signature", bogusStandard+" "+sample.headers["webhook-signature"])
	if _, err := fkod.VerifyWebhook(sample.secret, header, sample.body, nil); err != nil {
		t.Errorf("standard signature after a stale one: %v", err)
	}

	header = sample.header("webhook-id", "webhook-timestamp", "webhook-signature")
	header.Set("X-FKOD-Signature", sample.headers["X-FKOD-Signature"]+","+bogusFKOD)
	if _, err := fkod.VerifyWebhook(sample.secret, header, sample.body, nil); err != nil {
		t.Errorf("F-KOD signature beside a stale one: %v", err)
	}

	header = sample.header("X-FKOD-Signature")
	header.Set("webhook-signature", bogusStandard)
	_, err := fkod.VerifyWebhook(sample.secret, header, sample.body, nil)
	requireReason(t, err, fkod.ReasonSignatureMismatch)
}

func TestWebhookMissingAndMalformedHeaders(t *testing.T) {
	sample := loadSignedSample(t)

	_, err := fkod.VerifyWebhook(sample.secret, http.Header{}, sample.body, nil)
	requireReason(t, err, fkod.ReasonMissingSignature)

	header := sample.header("X-FKOD-Signature")
	header.Set("webhook-signature", "v1")
	_, err = fkod.VerifyWebhook(sample.secret, header, sample.body, nil)
	requireReason(t, err, fkod.ReasonMalformedHeader)

	header = sample.header("webhook-id", "webhook-timestamp", "webhook-signature")
	header.Set("X-FKOD-Signature", "v1=abc")
	_, err = fkod.VerifyWebhook(sample.secret, header, sample.body, nil)
	requireReason(t, err, fkod.ReasonMalformedHeader)

	header = sample.header("X-FKOD-Signature")
	header.Set("webhook-timestamp", "yesterday")
	_, err = fkod.VerifyWebhook(sample.secret, header, sample.body, nil)
	requireReason(t, err, fkod.ReasonMalformedTimestamp)
}
