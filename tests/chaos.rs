//! Integration tests: chaos.
