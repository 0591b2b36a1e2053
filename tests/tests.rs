//! All integration tests, in one test binary (as ripgrep does). Each area has its own module.

mod util;

mod agent;

mod chaos;
mod cluster;
mod dedup;
mod emit;
mod enrich;
mod harden;
mod hostile;
mod lifecycle;
mod ops;
mod package;
mod parse;
mod publish;
mod source;
mod spool;
mod tls;
