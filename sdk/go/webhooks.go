package fkod

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Reasons of a WebhookError, the same codes the platform's own verifier uses.
const (
	ReasonMissingSignature          = "missing_signature"
	ReasonMalformedHeader           = "malformed_header"
	ReasonMalformedTimestamp        = "malformed_timestamp"
	ReasonTimestampOutsideTolerance = "timestamp_outside_tolerance"
	ReasonSignatureMismatch         = "signature_mismatch"
)

// DefaultWebhookTolerance is how far a signature timestamp may be from the receiver's clock,
// in either direction.
const DefaultWebhookTolerance = 300 * time.Second

// maxSignatureHeaderLength matches the platform's limit; ten rotated signatures fit easily.
const maxSignatureHeaderLength = 2048

const webhookSecretPrefix = "whsec_"

// WebhookError is a delivery whose signature failed verification. Reason is one of the
// Reason constants.
type WebhookError struct {
	Reason  string
	Message string
}

func (e *WebhookError) Error() string {
	return "fkod: webhook verification failed (" + e.Reason + "): " + e.Message
}

// Event is a verified webhook event.
type Event struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Created  int64  `json:"created"`
	Livemode bool   `json:"livemode"`
	// Data is the event's data object; its shape depends on Type.
	Data json.RawMessage `json:"data"`
}

// WebhookOptions changes how VerifyWebhook checks a delivery.
type WebhookOptions struct {
	// Tolerance is the accepted clock difference (default DefaultWebhookTolerance).
	Tolerance time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// VerifyWebhook checks the signature of a delivery and returns its event.
//
// body must be the raw bytes received, before any JSON decoding. secret is the endpoint's
// whsec_ secret. When the Standard Webhooks headers (webhook-id, webhook-timestamp,
// webhook-signature) are present, they are verified; otherwise the X-FKOD-Signature header
// is. A header may carry several signatures during a secret rotation, and any match is
// accepted. A failed check returns a *WebhookError; an invalid secret returns another error.
func VerifyWebhook(secret string, header http.Header, body []byte, options *WebhookOptions) (*Event,
	error) {
	standardKey, err := decodeWebhookSecret(secret)
	if err != nil {
		return nil, err
	}
	tolerance := DefaultWebhookTolerance
	now := time.Now
	if options != nil {
		if options.Tolerance > 0 {
			tolerance = options.Tolerance
		}
		if options.Now != nil {
			now = options.Now
		}
	}

	hasStandard := len(header.Values("webhook-id")) > 0 ||
		len(header.Values("webhook-timestamp")) > 0 || len(header.Values("webhook-signature")) > 0
	if hasStandard {
		err = verifyStandard(standardKey, header, body, now(), tolerance)
	} else {
		err = verifyFKOD([]byte(secret), header, body, now(), tolerance)
	}
	if err != nil {
		return nil, err
	}

	var event Event
	if err := json.Unmarshal(body, &event); err != nil {
		return nil, fmt.Errorf("fkod: the webhook body is signed but is not a JSON event: %w", err)
	}
	return &event, nil
}

func decodeWebhookSecret(secret string) ([]byte, error) {
	if !strings.HasPrefix(secret, webhookSecretPrefix) {
		return nil, fmt.Errorf("fkod: a webhook secret starts with %q", webhookSecretPrefix)
	}
	encoded := strings.TrimRight(strings.TrimPrefix(secret, webhookSecretPrefix), "=")
	// Secrets with or without "=" padding are accepted.
	key, err := base64.RawStdEncoding.DecodeString(encoded)
	if err != nil || len(key) == 0 {
		return nil, fmt.Errorf("fkod: the webhook secret after %q is not valid standard base64",
			webhookSecretPrefix)
	}
	return key, nil
}

func verifyFKOD(key []byte, header http.Header, body []byte, now time.Time,
	tolerance time.Duration) error {
	values := header.Values("X-FKOD-Signature")
	if len(values) == 0 || values[0] == "" {
		return &WebhookError{ReasonMissingSignature, "the X-FKOD-Signature header is missing"}
	}
	if len(values) > 1 {
		return malformed("the X-FKOD-Signature header appears more than once")
	}
	value := values[0]
	if err := checkHeaderText("X-FKOD-Signature", value); err != nil {
		return err
	}

	timestampText := ""
	var candidates [][]byte
	for _, item := range strings.Split(value, ",") {
		name, itemValue, found := strings.Cut(strings.TrimSpace(item), "=")
		if !found {
			return malformed("the X-FKOD-Signature header has an item without '='")
		}
		switch name {
		case "t":
			if timestampText != "" {
				return malformed("the X-FKOD-Signature header has more than one t=")
			}
			timestampText = itemValue
		case "v1":
			digest, err := hex.DecodeString(itemValue)
			if err != nil || len(digest) != sha256.Size {
				return malformed("a v1 signature in X-FKOD-Signature is not 64 hex digits")
			}
			candidates = append(candidates, digest)
		}
		// Other names are signature versions this SDK does not know, so they are skipped.
	}
	if timestampText == "" {
		return malformed("the X-FKOD-Signature header has no t=")
	}
	if err := checkTimestamp(timestampText, now, tolerance); err != nil {
		return err
	}

	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(timestampText + "."))
	mac.Write(body)
	if !anyMatches(mac.Sum(nil), candidates) {
		return &WebhookError{ReasonSignatureMismatch,
			"no v1 signature matches the body and timestamp"}
	}
	return nil
}

func verifyStandard(key []byte, header http.Header, body []byte, now time.Time,
	tolerance time.Duration) error {
	values := map[string]string{}
	for _, name := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
		found := header.Values(name)
		if len(found) == 0 || found[0] == "" {
			return &WebhookError{ReasonMissingSignature, "the " + name + " header is missing"}
		}
		if len(found) > 1 {
			return malformed("the " + name + " header appears more than once")
		}
		if err := checkHeaderText(name, found[0]); err != nil {
			return err
		}
		values[name] = found[0]
	}
	messageID := values["webhook-id"]
	if strings.ContainsAny(messageID, " ,") {
		return malformed("the webhook-id header is not a single message id")
	}
	timestampText := values["webhook-timestamp"]
	if err := checkTimestamp(timestampText, now, tolerance); err != nil {
		return err
	}

	var candidates [][]byte
	for _, entry := range strings.Split(values["webhook-signature"], " ") {
		if entry == "" {
			continue
		}
		version, encoded, found := strings.Cut(entry, ",")
		if !found {
			return malformed("a webhook-signature entry has no ',' after its version")
		}
		if version != "v1" {
			continue
		}
		digest, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil || len(digest) != sha256.Size {
			return malformed(
				"a v1 signature in webhook-signature is not a base64 HMAC-SHA256")
		}
		candidates = append(candidates, digest)
	}

	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(messageID + "." + timestampText + "."))
	mac.Write(body)
	if !anyMatches(mac.Sum(nil), candidates) {
		return &WebhookError{ReasonSignatureMismatch,
			"no v1 signature matches the body, message id and timestamp"}
	}
	return nil
}

func checkHeaderText(name, value string) error {
	if len(value) > maxSignatureHeaderLength {
		return malformed(fmt.Sprintf("the %s header is longer than %d characters", name,
			maxSignatureHeaderLength))
	}
	for i := 0; i < len(value); i++ {
		if value[i] < 0x20 || value[i] > 0x7e {
			return malformed("the " + name +
				" header contains a character that is not printable ASCII")
		}
	}
	return nil
}

func malformed(message string) *WebhookError {
	return &WebhookError{ReasonMalformedHeader, message}
}

func checkTimestamp(text string, now time.Time, tolerance time.Duration) error {
	if len(text) == 0 || len(text) > 15 || strings.Trim(text, "0123456789") != "" {
		return &WebhookError{ReasonMalformedTimestamp,
			"the signature timestamp is not an integer of Unix seconds"}
	}
	timestamp, _ := strconv.ParseInt(text, 10, 64)
	difference := now.Unix() - timestamp
	if difference < 0 {
		difference = -difference
	}
	if difference > int64(tolerance/time.Second) {
		return &WebhookError{ReasonTimestampOutsideTolerance, fmt.Sprintf(
			"the signature timestamp is more than %d seconds from the current time",
			int64(tolerance/time.Second))}
	}
	return nil
}

// anyMatches compares expected with every candidate in constant time, and checks them all,
// so the time taken does not reveal which one matched.
func anyMatches(expected []byte, candidates [][]byte) bool {
	matched := 0
	for _, candidate := range candidates {
		matched |= subtle.ConstantTimeCompare(expected, candidate)
	}
	return matched == 1
}
