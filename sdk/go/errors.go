package fkod

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// FieldError names one invalid part of a request, as the error envelope's "errors" list does.
type FieldError struct {
	// Location is the part of the request that contained the value: "body", "query",
	// "path" or "header".
	Location    string `json:"location"`
	Name        string `json:"name"`
	Description string `json:"description"`
}

// RateLimit is the tightest rate-limit window the gateway reported for a call.
type RateLimit struct {
	Limit     int
	Remaining int
	// Reset is when the oldest counted calls leave the window.
	Reset time.Time
}

// APIError is a response with a status other than 2xx. The platform sends every error as
// the envelope {"status", "code", "message", "errors", "request_id"}.
type APIError struct {
	Status  int
	Code    string
	Message string
	Errors  []FieldError
	// RequestID is the X-Request-Id header, or the envelope's request_id without one.
	RequestID string
	// RetryAfter is the Retry-After header of a 429 or 503 response, or zero.
	RetryAfter time.Duration
	RateLimit  *RateLimit
	Header     http.Header
	// Body is the raw response body, for errors that are not an envelope.
	Body []byte
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fkod: %d %s: %s", e.Status, e.Code, e.Message)
	for _, field := range e.Errors {
		fmt.Fprintf(&b, " [%s %s: %s]", field.Location, field.Name, field.Description)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request id %s)", e.RequestID)
	}
	return b.String()
}

// FieldError returns the error about the named field, or nil when there is none.
func (e *APIError) FieldError(name string) *FieldError {
	for i := range e.Errors {
		if e.Errors[i].Name == name {
			return &e.Errors[i]
		}
	}
	return nil
}

func (e *APIError) retryable() bool {
	switch {
	case e.Status == http.StatusTooManyRequests, e.Status == http.StatusServiceUnavailable:
		return true
	case e.Status == http.StatusConflict && e.Code == "idempotency_request_in_progress":
		// The first request with this key still runs; its stored response comes later.
		return true
	}
	return false
}

func newAPIError(status int, header http.Header, body []byte) *APIError {
	apiErr := &APIError{
		Status:    status,
		Header:    header,
		Body:      body,
		RequestID: header.Get("X-Request-Id"),
		RateLimit: parseRateLimit(header),
	}

	var envelope struct {
		Code      string       `json:"code"`
		Message   string       `json:"message"`
		Errors    []FieldError `json:"errors"`
		RequestID string       `json:"request_id"`
	}
	if json.Unmarshal(body, &envelope) == nil && envelope.Code != "" {
		apiErr.Code = envelope.Code
		apiErr.Message = envelope.Message
		apiErr.Errors = envelope.Errors
		if apiErr.RequestID == "" {
			apiErr.RequestID = envelope.RequestID
		}
	} else {
		apiErr.Code = "http_" + strconv.Itoa(status)
		apiErr.Message = http.StatusText(status)
	}

	if seconds, err := strconv.Atoi(strings.TrimSpace(header.Get("Retry-After"))); err == nil &&
		seconds >= 0 {
		apiErr.RetryAfter = time.Duration(seconds) * time.Second
	}
	return apiErr
}

// parseRateLimit reads the X-RateLimit-* headers, or returns nil when a call was not counted.
func parseRateLimit(header http.Header) *RateLimit {
	limit, err := strconv.Atoi(header.Get("X-RateLimit-Limit"))
	if err != nil {
		return nil
	}
	remaining, _ := strconv.Atoi(header.Get("X-RateLimit-Remaining"))
	reset, _ := strconv.ParseInt(header.Get("X-RateLimit-Reset"), 10, 64)
	return &RateLimit{Limit: limit, Remaining: remaining, Reset: time.Unix(reset, 0)}
}

// ConnectionError is a call that got no HTTP response, after any retries: the connection
// was refused or reset, or the attempt timed out.
type ConnectionError struct {
	Method string
	URL    string
	Err    error
}

func (e *ConnectionError) Error() string {
	return fmt.Sprintf("fkod: %s %s failed: %v", e.Method, e.URL, e.Err)
}

func (e *ConnectionError) Unwrap() error { return e.Err }
