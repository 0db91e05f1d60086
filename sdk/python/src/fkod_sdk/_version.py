"""The SDK's version and the API version it is written against."""

VERSION = "0.1.0"

# The dated F-KOD API version that every request pins with the FKOD-Version header.
API_VERSION = "2026-12-01"
