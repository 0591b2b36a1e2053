#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let parsed = iem_parsers::parse_syslog_line(&line);
    // The message is a suffix of the line without its trailing '\r'.
    let trimmed = line.strip_suffix('\r').unwrap_or(&line);
    assert!(trimmed.ends_with(parsed.message));
});
