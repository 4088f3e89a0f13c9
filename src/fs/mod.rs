//! The filesystem core, without FUSE types.
