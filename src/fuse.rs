//! fuser glue.
