//! Any bytes: parsing and validating must return, never panic, overflow the stack or run away.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(containers) = kedge_crds::load_str("fuzz.yaml", &text) {
        // What parses must serialize and parse back to the same value.
        let stream: Vec<String> = containers.iter().map(|c| serde_json::to_string(c).unwrap()).collect();
        let again = kedge_crds::load_str("again.json", &stream.join("\n---\n")).expect("a valid set stays valid");
        assert_eq!(again, containers);
    }
});
