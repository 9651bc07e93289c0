//! Property tests of the streaming masker: any split of the input into chunks gives the
//! same bytes as masking it at once, and no secret survives.

use podci_model::mask::{DEFAULT_TOKEN_PREFIXES, Masker};
use proptest::prelude::*;

/// Secrets from GitLab's maskable alphabet; a small alphabet makes overlaps, shared
/// prefixes and repeats likely.
fn secret() -> impl Strategy<Value = String> {
    prop_oneof!["[ab]{8,12}", "[a-c1@:.~+/=_-]{8,16}", "gl[a-z]{0,3}-[ab]{3,6}",]
}

/// Text built from fragments: secrets, pieces of secrets, token prefixes, noise.
fn text(secrets: Vec<String>) -> impl Strategy<Value = (Vec<String>, Vec<u8>)> {
    let frags: Vec<String> = secrets.clone();
    let frag = prop_oneof![
        4 => proptest::sample::select(frags.clone()),
        2 => (proptest::sample::select(frags), 0usize..12).prop_map(|(s, n)| s[..n.min(s.len())].to_string()),
        2 => proptest::sample::select(DEFAULT_TOKEN_PREFIXES.to_vec()).prop_map(str::to_string),
        3 => "[ab \n!x.-]{0,6}",
    ];
    proptest::collection::vec(frag, 0..24)
        .prop_map(move |parts| (secrets.clone(), parts.concat().into_bytes()))
}

fn input() -> impl Strategy<Value = (Vec<String>, Vec<u8>, Vec<usize>)> {
    proptest::collection::vec(secret(), 1..4)
        .prop_flat_map(text)
        .prop_flat_map(|(secrets, data)| {
            let n = data.len();
            (Just(secrets), Just(data), proptest::collection::vec(0..=n, 0..12))
        })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn chunked_equals_one_shot_and_hides_secrets((secrets, data, mut cuts) in input()) {
        let masker = Masker::new(&secrets, DEFAULT_TOKEN_PREFIXES);
        let want = masker.mask_all(&data);
        for s in &secrets {
            prop_assert!(!contains(&want, s.as_bytes()), "secret {s:?} in {:?}", String::from_utf8_lossy(&want));
        }
        cuts.sort_unstable();
        let mut m = masker.clone();
        let mut got = Vec::new();
        let mut last = 0;
        for c in cuts {
            got.extend(m.write(&data[last..c]));
            last = c;
        }
        got.extend(m.write(&data[last..]));
        got.extend(m.finish());
        prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    }

    #[test]
    fn byte_by_byte_equals_one_shot((secrets, data, _cuts) in input()) {
        let masker = Masker::new(&secrets, DEFAULT_TOKEN_PREFIXES);
        let want = masker.mask_all(&data);
        let mut m = masker.clone();
        let mut got = Vec::new();
        for b in &data {
            got.extend(m.write(std::slice::from_ref(b)));
        }
        got.extend(m.finish());
        prop_assert_eq!(got, want);
    }

    #[test]
    fn masks_exactly_like_a_reference((secrets, data, _cuts) in input()) {
        // Independent, quadratic reference of the documented semantics.
        let want = reference(&secrets, DEFAULT_TOKEN_PREFIXES, &data);
        let got = Masker::new(&secrets, DEFAULT_TOKEN_PREFIXES).mask_all(&data);
        prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'=')
}

/// Leftmost position first; at a position the longest pattern; secrets become `[MASKED]`,
/// a prefix followed by token bytes keeps the prefix and masks the run.
fn reference(secrets: &[String], prefixes: &[&str], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    'outer: while i < data.len() {
        let mut best: Option<(usize, bool)> = None;
        for s in secrets {
            if data[i..].starts_with(s.as_bytes()) && best.is_none_or(|(l, _)| s.len() > l) {
                best = Some((s.len(), true));
            }
        }
        for p in prefixes {
            if data[i..].starts_with(p.as_bytes()) && best.is_none_or(|(l, _)| p.len() > l) {
                best = Some((p.len(), false));
            }
        }
        match best {
            Some((l, true)) => {
                out.extend_from_slice(b"[MASKED]");
                i += l;
                continue 'outer;
            }
            Some((l, false)) if data.get(i + l).is_some_and(|&b| is_token_byte(b)) => {
                out.extend_from_slice(&data[i..i + l]);
                out.extend_from_slice(b"[MASKED]");
                i += l;
                while i < data.len() && is_token_byte(data[i]) {
                    i += 1;
                }
                continue 'outer;
            }
            _ => {}
        }
        out.push(data[i]);
        i += 1;
    }
    out
}
