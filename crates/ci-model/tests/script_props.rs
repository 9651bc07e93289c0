//! Property tests of the end-of-step marker parser and of the variable quoting, the two
//! places where outside text meets the step script.

use podci_model::script::{parse_step_end, quote, step_end_marker};
use proptest::prelude::*;

proptest! {
    #[test]
    fn marker_round_trips(nonce in "[A-Za-z0-9_-]{8,40}", code in any::<i32>(), crlf in any::<bool>()) {
        let mut line = step_end_marker(&nonce, code).into_bytes();
        line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        prop_assert_eq!(parse_step_end(&line, &nonce), Some(code));
    }

    #[test]
    fn code_field_parses_like_a_decimal_i32(nonce in "[A-Za-z0-9_-]{8,16}", code in "[-+0-9a ]{0,11}") {
        let line = format!("podci-step-end:{nonce}:{code}");
        let want = if code.starts_with('+') { None } else { code.parse::<i32>().ok() };
        prop_assert_eq!(parse_step_end(line.as_bytes(), &nonce), want);
    }

    #[test]
    fn marker_with_other_nonce_or_extra_text_is_rejected(
        nonce in "[A-Za-z0-9]{8,16}",
        other in "[A-Za-z0-9]{8,16}",
        code in any::<i32>(),
        junk in "[ -~]{1,8}",
    ) {
        prop_assume!(nonce != other && !other.starts_with(&nonce));
        prop_assert_eq!(parse_step_end(step_end_marker(&other, code).as_bytes(), &nonce), None);
        let before = format!("{junk}{}", step_end_marker(&nonce, code));
        prop_assert_eq!(parse_step_end(before.as_bytes(), &nonce), None);
        // Digits right after the marker would just spell another exit code.
        if !junk.starts_with(|c: char| c.is_ascii_digit()) {
            let after = format!("{}{junk}", step_end_marker(&nonce, code));
            prop_assert_eq!(parse_step_end(after.as_bytes(), &nonce), None);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the value, the shell gives back exactly the same bytes.
    #[test]
    fn quoted_words_are_literal_in_real_shells(value in "[ -~\n\t\u{e9}\u{1F600}]{0,40}") {
        for bin in ["/bin/sh", "/bin/bash"] {
            if !std::path::Path::new(bin).exists() {
                continue;
            }
            let out = std::process::Command::new(bin)
                .arg("-c")
                .arg(format!("printf '%s' {}", quote(&value)))
                .output()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout), value.as_str(), "{}", bin);
        }
    }
}

mod scanner {
    use podci_model::script::{StepEndScanner, step_end_marker};
    use proptest::prelude::*;

    const NONCE: &str = "abcd1234xy";

    fn scan(data: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<i32>) {
        let mut s = StepEndScanner::new(NONCE);
        let mut out = Vec::new();
        let mut last = 0;
        for &c in cuts {
            let c = c.clamp(last, data.len());
            out.extend(s.write(&data[last..c]));
            last = c;
        }
        out.extend(s.write(&data[last..]));
        out.extend(s.finish());
        (out, s.exit_code())
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z \\r\\n]{0,8}",
            any::<i32>().prop_map(|c| step_end_marker(NONCE, c)),
            any::<i32>().prop_map(|c| step_end_marker("otherNonce1", c)),
            Just("podci-step-end:abcd".to_string()),
            Just("\n".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_result(parts in proptest::collection::vec(fragment(), 0..16), mut cuts in proptest::collection::vec(0usize..200, 0..10)) {
            let data = parts.concat().into_bytes();
            cuts.sort_unstable();
            prop_assert_eq!(scan(&data, &cuts), scan(&data, &[]));
            let bytewise: Vec<usize> = (0..data.len()).collect();
            prop_assert_eq!(scan(&data, &bytewise), scan(&data, &[]));
        }

        #[test]
        fn script_output_loses_exactly_the_marker(user in "[a-z \\n]{0,40}", code in any::<i32>(), cut in 0usize..80) {
            // What a rendered script prints at its end: "\n" then the marker line.
            let data = format!("{user}\n{}\n", step_end_marker(NONCE, code)).into_bytes();
            let (out, exit) = scan(&data, &[cut]);
            prop_assert_eq!(exit, Some(code));
            prop_assert_eq!(String::from_utf8_lossy(&out), user.as_str());
        }

        #[test]
        fn text_without_the_marker_passes_unchanged(text in "[a-z0-9:\\n-]{0,60}|podci-step-end:[a-z0-9:\\n-]{0,30}", cut in 0usize..80) {
            prop_assume!(!text.contains(&format!("podci-step-end:{NONCE}:")));
            let (out, exit) = scan(text.as_bytes(), &[cut]);
            prop_assert_eq!(exit, None);
            prop_assert_eq!(String::from_utf8_lossy(&out), text.as_str());
        }
    }
}
