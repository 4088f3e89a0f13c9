//! Streaming body of Create File (filled in by the client work).
