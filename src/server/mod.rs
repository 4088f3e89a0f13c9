//! The embedded Media Manager server (filled in by the server work).
