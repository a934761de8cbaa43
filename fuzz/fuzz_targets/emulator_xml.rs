//! Fuzzes the emulator's XML reader (S3 notification configurations): it must never panic, and
//! whatever it accepts, escaping its text and reading it back gives the same text.
#![no_main]

use kvs_emulator::xml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(root) = xml::parse_xml(&text) {
        let doc = format!("<r>{}</r>", xml::escape(&root.text));
        let back = xml::parse_xml(&doc).expect("escaped text always parses");
        assert_eq!(back.text, root.text);
    }
});
