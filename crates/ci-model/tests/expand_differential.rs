//! `expand_runner` against a line-by-line transliteration of Go's `os.Expand` and
//! `getShellName` (Go's src/os/env.go) with GitLab Runner's lookup
//! (`Variables.value` in common/spec/variables.go), on random strings made of the
//! characters that matter to the grammar.

use podci_model::expand::expand_runner;
use proptest::prelude::*;

fn is_shell_special_var(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9')
}

fn is_alpha_num(c: u8) -> bool {
    c == b'_' || c.is_ascii_digit() || c.is_ascii_lowercase() || c.is_ascii_uppercase()
}

/// Go's getShellName: the name and how many bytes it used.
fn get_shell_name(s: &[u8]) -> (&[u8], usize) {
    if s[0] == b'{' {
        if s.len() > 2 && is_shell_special_var(s[1]) && s[2] == b'}' {
            return (&s[1..2], 3);
        }
        for i in 1..s.len() {
            if s[i] == b'}' {
                if i == 1 {
                    return (&[], 2);
                }
                return (&s[1..i], i + 1);
            }
        }
        return (&[], 1);
    }
    if is_shell_special_var(s[0]) {
        return (&s[0..1], 1);
    }
    let mut i = 0;
    while i < s.len() && is_alpha_num(s[i]) {
        i += 1;
    }
    (&s[..i], i)
}

/// GitLab Runner's `Variables.value` for `os.Expand`.
fn runner_value(vars: &[(String, String)], key: &str) -> String {
    match key {
        "$" => "$".into(),
        "*" | "#" | "@" | "!" | "?" | "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" => {
            String::new()
        }
        _ => vars
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
    }
}

/// Go's os.Expand.
fn go_expand(s: &str, vars: &[(String, String)]) -> String {
    let b = s.as_bytes();
    let mut buf: Vec<u8> = Vec::new();
    let mut i = 0;
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            buf.extend_from_slice(&b[i..j]);
            let (name, w) = get_shell_name(&b[j + 1..]);
            if name.is_empty() && w > 0 {
                // Invalid syntax; eat the characters.
            } else if name.is_empty() {
                buf.push(b[j]);
            } else {
                let key = String::from_utf8_lossy(name).into_owned();
                buf.extend_from_slice(runner_value(vars, &key).as_bytes());
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    if i < b.len() {
        buf.extend_from_slice(&b[i..]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn vars() -> Vec<(String, String)> {
    vec![
        ("A".into(), "va".into()),
        ("AB".into(), "vab".into()),
        ("A_1".into(), "v$A".into()),
        ("-".into(), "dash".into()),
        ("A B".into(), "spaced".into()),
        ("A".into(), "va2".into()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn expand_runner_is_os_expand(parts in proptest::collection::vec(
        prop_oneof![
            Just("$"), Just("{"), Just("}"), Just("A"), Just("B"), Just("_"), Just("1"),
            Just("?"), Just("-"), Just(" "), Just("x"), Just("é"), Just("$$"), Just("${"),
        ],
        0..16,
    )) {
        let s: String = parts.concat();
        let vars = vars();
        prop_assert_eq!(expand_runner(&s, &vars), go_expand(&s, &vars), "input {:?}", s);
    }
}

#[test]
fn known_cases() {
    let vars = vars();
    for s in [
        "$A", "${A}", "$AB$A", "${A B}", "$-", "${-}", "$1x", "${", "${}", "a$", "$é", "$$$", "${?}",
    ] {
        assert_eq!(expand_runner(s, &vars), go_expand(s, &vars), "input {s:?}");
    }
}
