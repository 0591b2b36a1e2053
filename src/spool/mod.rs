//! placeholder, see lib.rs Layout
