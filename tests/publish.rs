//! Integration tests: publish.
