//! Integration tests: ops.
