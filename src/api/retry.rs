//! Backoff policy for retried calls (filled in by the client work).
