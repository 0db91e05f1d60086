package fkod

// Version is the version of this SDK, sent in the User-Agent header.
const Version = "0.1.0"

// APIVersion is the dated F-KOD API version this SDK is written against. The client sends it
// in the FKOD-Version header, so a change of the API key's default version does not change
// the responses the SDK parses.
const APIVersion = "2026-12-01"
