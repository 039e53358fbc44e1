//! No input makes the parser or the validator panic: arbitrary bytes, a soup of YAML tokens, and valid
//! examples with random edits. (The libFuzzer target in crds/fuzz covers the same ground for longer.)

use proptest::collection::vec;
use proptest::prelude::*;

/// Parses and validates `text` on a 2 MiB thread (a tokio worker's stack); fails if that panics.
fn survives(text: String) -> Result<(), TestCaseError> {
    let outcome = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let _ = kedge_crds::load_str("garbage.yaml", &text);
        })
        .unwrap()
        .join();
    prop_assert!(outcome.is_ok(), "the parser panicked");
    Ok(())
}

const TOKENS: &[&str] = &[
    "apiVersion: kedge.io/v1\n",
    "kind: Container\n",
    "metadata:\n",
    "spec:\n",
    "  name: a\n",
    "  image: busybox\n",
    "---\n",
    "...\n",
    "- ",
    "  ",
    "\t",
    ": ",
    "? ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "!!int ",
    "!x ",
    "|\n",
    ">-\n",
    "\"",
    "'",
    "#",
    "\n",
    "ports",
    "dependsOn",
    "[b]",
    "- name: b\n",
    "8080:80/tcp",
    "512Mi",
    "-1",
    "1.5",
    "1e999",
    "0x",
    "~",
    "null",
    "true",
    "\\u0000",
    "%YAML 1.2\n",
    "%TAG ! tag:x,2000:\n",
    "<<: *a\n",
    "\u{feff}",
    "é",
    "\r\n",
];

fn token_soup() -> impl Strategy<Value = String> {
    vec(proptest::sample::select(TOKENS), 0..60).prop_map(|tokens| tokens.concat())
}

fn edited_example() -> impl Strategy<Value = String> {
    let examples: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "json"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    (proptest::sample::select(examples), vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8))
        .prop_map(|(example, edits)| {
            let mut bytes = example.into_bytes();
            for (index, byte, kind) in edits {
                let at = index.index(bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, byte),
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes(bytes in vec(any::<u8>(), 0..400)) {
        survives(String::from_utf8_lossy(&bytes).into_owned())?;
    }

    #[test]
    fn token_soups(text in token_soup()) {
        survives(text)?;
    }

    #[test]
    fn edited_examples(text in edited_example()) {
        survives(text)?;
    }
}

#[test]
fn deep_and_wide_inputs() {
    for text in [
        "[".repeat(100_000),
        "{a: ".repeat(50_000),
        "- ".repeat(50_000),
        format!("a: {}", "x".repeat(1_000_000)),
        "---\n".repeat(20_000),
    ] {
        survives(text).unwrap();
    }
}

/// A Compose file whose values are built to hurt: defaults nested 100,000 deep and a megabyte-long
/// image. It is refused on a tokio worker's 2 MiB stack, in well under a second, and every error is
/// one short line, not the value echoed back.
#[test]
fn hostile_compose_values_give_short_errors() {
    let depth = 100_000;
    let nested = format!("{}busybox{}", "${X:-".repeat(depth), "}".repeat(depth));
    let long = "a".repeat(1 << 20);
    let text = format!("services:\n  web:\n    image: \"{nested}\"\n  db:\n    image: \"{long}\"\n");
    let outcome = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let started = std::time::Instant::now();
            let (_, errors) = kedge_crds::parse_objects_str("compose.yml", &text);
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            (started.elapsed(), shown.join("\n"))
        })
        .unwrap()
        .join();
    let (elapsed, shown) = outcome.expect("the parser survives");
    assert!(elapsed < std::time::Duration::from_secs(2), "took {elapsed:?}");
    assert!(shown.contains("nested deeper than 16 levels"), "{}", &shown[..shown.len().min(2000)]);
    for line in shown.lines() {
        assert!(line.len() < 1000, "a line of {} bytes: {}...", line.len(), &line[..300]);
    }
}
