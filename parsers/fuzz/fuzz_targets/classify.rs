#![no_main]

use iem_parsers::iem::{Classified, classify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let message = String::from_utf8_lossy(data);
    match classify(&message) {
        Classified::NotIem => assert!(!message.contains("IEC:")),
        Classified::Iem(iem) => {
            assert!(message[iem.marker_at..].starts_with("IEC:"));
            // The canonical code parses back to itself.
            let again = format!("IEC:{}:x", iem.code);
            assert!(matches!(classify(&again), Classified::Iem(i) if i.code == iem.code));
        }
        Classified::Malformed(bad) => assert_eq!(&message[bad.marker_at..], bad.text),
    }
});
