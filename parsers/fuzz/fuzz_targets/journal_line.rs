#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Err(iem_parsers::journal::Error::Syntax { at }) = iem_parsers::journal::parse(&line) {
        assert!(at <= line.len());
    }
});
