//! Mount lifecycle.
