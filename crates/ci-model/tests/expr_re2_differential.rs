//! Differential test of podci's RE2 emulation against real RE2 (Google's `google-re2`
//! Python bindings, installed by `.ci/setup.d/30-expr-re2.sh`). GitLab compiles
//! `rules:if` patterns with RE2 (`Gitlab::UntrustedRegexp`); podci runs them on the
//! `regex` crate after translating RE2 syntax. For many patterns, tricky and random, both
//! must agree on whether the pattern compiles and on which texts it matches.

use std::io::Write;
use std::process::{Command, Stdio};

use podci_model::expr::ruby_syntax_regexp;

/// Asks real RE2 about each pattern: `None` if it does not compile, else one bool per
/// text (an unanchored search, as `UntrustedRegexp#scan(text).present?`).
const RE2_ORACLE: &str = r#"
import json, sys, re2
req = json.load(sys.stdin)
out = []
for source in req["patterns"]:
    try:
        r = re2.compile(source)
    except Exception:
        out.append(None)
        continue
    out.append([r.search(t) is not None for t in req["texts"]])
json.dump(out, sys.stdout)
"#;

fn python_with_re2() -> Option<String> {
    for py in ["python3", "python"] {
        let ok = Command::new(py)
            .args(["-c", "import re2"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py.to_owned());
        }
    }
    None
}

/// Patterns picked for where RE2 and the `regex` crate differ, or might.
const TRICKY: &[&str] = &[
    r"\d+",
    r"\w+",
    r"\s",
    r"\S",
    r"\D",
    r"\W",
    r"\bfoo\b",
    r"\Bo",
    r"[\d]",
    r"[\w-]",
    r"[^\s]",
    r"[\D]",
    r"[a\W]",
    "[[]",
    "[]a]",
    "[^]a]",
    "[a&&b]",
    "[a~~b]",
    "[a--b]",
    "[+--]",
    "[a-]",
    "[-a]",
    "a{",
    "a{x}",
    "a{,2}",
    "a{2}",
    "a{2,}",
    "a{1,3}",
    "a{1001}",
    "a{1000}",
    "a{2}{3}",
    "a**",
    "a++",
    "a*?",
    "a??",
    "a*??",
    "a{2}?",
    "x}",
    "{",
    "}",
    "{2}",
    "*a",
    "a|*",
    r"\Qa.b\E",
    r"\Qa.b",
    r"a\E",
    r"\101",
    r"\0",
    r"\1",
    r"\12",
    r"\8",
    r"\x41",
    r"\x{263a}",
    r"\pL",
    r"\p{Greek}",
    r"\p{^Greek}",
    r"\PL",
    r"[\p{Greek}a]",
    r"\C",
    r"\e",
    r"\_",
    r"\<",
    r"\-",
    r"\/",
    r"\z",
    r"\A",
    r"a\Z",
    "(?i)k",
    "(?i)s",
    "(?i)é",
    "(?s).",
    ".",
    "(?m)^b$",
    "^b$",
    "(?U)a+",
    "(?x)a b",
    "(?#c)",
    "(?:ab)+",
    "(?P<n>a)",
    "(?<n>a)",
    "(?P=n)",
    "(?=a)",
    "(?i-s:a.)",
    "(?ii)a",
    "(?i)(?-i)A",
    "(?)a",
    "(?-)a",
    "()",
    "(|a)",
    "a|",
    "[[:alpha:]]",
    "[[:^alpha:]]",
    "[[:word:]]",
    "[[:foo:]]",
    "[[:alpha:]",
    "[a",
    "a)",
    "(a",
    "\\",
    "a\\",
    "[\\]]",
    "[a\\-z]",
    "[\\[]",
    r"\n",
    r"\t",
    r"\v",
    r"\f",
    r"\a",
    r"\r",
    "é+",
    "\u{0}",
    r"^\/a\/full\/path$",
    r"\$",
    "$^",
    r"(?i)\x{212A}",
    "[^a]",
    "[^\n]",
    "(a)(b)",
    "a{0}",
    "a{,}",
    "a{1,2,3}",
    "a{3,2}",
    "[z-a]",
    "\\pN+",
    "\\p{Han}",
    "[[:space:]]",
    "(?s:.)",
];

/// Texts every pattern is matched against.
const TEXTS: &[&str] = &[
    "",
    "a",
    "ab",
    "aab",
    "aaa",
    "A",
    "AB",
    "b",
    "k",
    "K",
    "\u{212A}",
    "s",
    "S",
    "\u{17F}",
    "é",
    "É",
    "\n",
    "a\nb",
    "b\n",
    "12",
    "٣",
    " ",
    "\t",
    "\u{b}",
    "\u{c}",
    "\u{a0}",
    "{2}",
    "a{",
    "a{x}",
    "a{,2}",
    "[",
    "]",
    "&",
    "~",
    "-",
    "+",
    ",",
    "αβ",
    "☺",
    "_",
    "foo",
    "a foo b",
    "a.b",
    "axb",
    "A",
    "\0",
    "\u{7}",
    "\u{1b}",
    "x}",
    "/a/full/path",
    "$",
    "漢",
    "a-z",
    "\\",
    "<",
];

/// A small deterministic generator, so a failure can be reproduced by its index.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn random_patterns(count: usize) -> Vec<String> {
    const PIECES: &[&str] = &[
        "a",
        "b",
        "k",
        "é",
        ".",
        "*",
        "+",
        "?",
        "|",
        "(",
        ")",
        "[",
        "]",
        "^",
        "$",
        r"\d",
        r"\w",
        r"\s",
        r"\b",
        r"\W",
        "{2}",
        "{1,}",
        "{,2}",
        "{",
        "}",
        "-",
        "&&",
        "~~",
        "--",
        "[:alpha:]",
        "(?i)",
        "(?s)",
        "(?m)",
        "(?U)",
        "(?:",
        r"\Q",
        r"\E",
        r"\0",
        r"\12",
        r"\x41",
        r"\pL",
        r"\p{^Greek}",
        "\n",
        " ",
        "/",
        r"\z",
        r"\A",
        r"\.",
        r"\[",
        "ſ",
        "K",
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    (0..count)
        .map(|_| {
            let len = 1 + rng.next(6);
            (0..len).map(|_| PIECES[rng.next(PIECES.len())]).collect()
        })
        .collect()
}

#[test]
fn podci_regexes_agree_with_re2() {
    let Some(python) = python_with_re2() else {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with the google-re2 module is required (.ci/setup.d/30-expr-re2.sh)");
        }
        eprintln!(
            "SKIPPED podci_regexes_agree_with_re2: no python3 with `import re2`; run `pip install google-re2`"
        );
        return;
    };

    // Each body is tried bare and with each flag, as GitLab prefixes `(?flags)`.
    let mut bodies: Vec<String> = TRICKY.iter().map(|s| (*s).to_owned()).collect();
    bodies.extend(random_patterns(1500));
    let mut cases: Vec<(String, String)> = Vec::new(); // (ruby syntax text, RE2 source)
    for body in &bodies {
        if body.contains('\n') {
            // RubySyntax reads one line; a newline inside the body is not a pattern.
            continue;
        }
        if body.contains(r"\C") {
            // Known gap: RE2's `\C` (any byte) has no `regex` crate equivalent on text;
            // podci rejects it (see the unit tests in src/expr/re2.rs).
            continue;
        }
        for flags in ["", "i", "m", "s", "U"] {
            let source = if flags.is_empty() {
                body.clone()
            } else {
                format!("(?{flags}){body}")
            };
            cases.push((format!("/{body}/{flags}"), source));
        }
    }

    let request = serde_json::json!({
        "patterns": cases.iter().map(|(_, src)| src).collect::<Vec<_>>(),
        "texts": TEXTS,
    });
    let mut child = match Command::new(&python)
        .args(["-c", RE2_ORACLE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start {python}: {e}"),
    };
    if let Some(mut stdin) = child.stdin.take()
        && let Err(e) = stdin.write_all(request.to_string().as_bytes())
    {
        panic!("writing to the RE2 oracle: {e}");
    }
    let output = match child.wait_with_output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("the RE2 oracle failed: {}", o.status),
        Err(e) => panic!("the RE2 oracle failed: {e}"),
    };
    let answers: Vec<Option<Vec<bool>>> = match serde_json::from_slice(&output.stdout) {
        Ok(a) => a,
        Err(e) => panic!("unreadable RE2 oracle output: {e}"),
    };
    assert_eq!(answers.len(), cases.len());

    let mut mismatches = Vec::new();
    let (mut compiled, mut rejected) = (0, 0);
    for ((text, source), re2_answer) in cases.iter().zip(&answers) {
        let ours = ruby_syntax_regexp(text);
        match (&ours, re2_answer) {
            (Ok(re), Some(matches)) => {
                compiled += 1;
                for (t, &want) in TEXTS.iter().zip(matches) {
                    if re.is_match(t) != want {
                        mismatches.push(format!("{source:?} on {t:?}: RE2 {want}, podci {}", !want));
                    }
                }
            }
            (Err(_), None) => rejected += 1,
            (Ok(_), None) => mismatches.push(format!("{source:?}: RE2 rejects it, podci compiles it")),
            (Err(e), Some(_)) => {
                mismatches.push(format!("{source:?}: RE2 compiles it, podci rejects it ({e})"))
            }
        }
    }
    eprintln!(
        "RE2 differential: {} patterns, {compiled} compiled by both, {rejected} rejected by both",
        cases.len()
    );
    assert!(
        compiled > 1000 && rejected > 100,
        "the corpus should exercise both outcomes"
    );
    assert!(
        mismatches.is_empty(),
        "{} disagreements with RE2:\n{}",
        mismatches.len(),
        mismatches.iter().take(60).cloned().collect::<Vec<_>>().join("\n")
    );
}
