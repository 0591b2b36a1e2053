//! Integration tests of the parsers crate, one binary: property tests and the fuzz corpus replay.

mod fuzz_corpus;
mod properties;
