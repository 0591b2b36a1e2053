//! Integration tests: emit.
