//! GitLab's regular expressions for CI expressions: `Gitlab::UntrustedRegexp` (RE2) and
//! its `RubySyntax` front end (`lib/gitlab/untrusted_regexp.rb`,
//! `lib/gitlab/untrusted_regexp/ruby_syntax.rb` in gitlabhq), run on the `regex` crate.
//!
//! `RubySyntax.fabricate!` matches the text against `^/(?<regexp>.*)/(?<flags>[ismU]*)$`
//! (Ruby: `^`/`$` are line anchors, `.` stops at `\n`) and hands RE2 the body prefixed
//! with `(?flags)` when flags are present. So the flags mean what RE2 says: `i` case
//! folding, `m` multi-line `^`/`$`, `s` dot matches `\n`, `U` ungreedy; `x` is not a
//! flag at all. RE2 syntax differs from the `regex` crate's in a few places, which
//! [`translate`] rewrites so that a pattern matches what RE2 would match:
//! `\d \w \s \b` are ASCII in RE2, `[` inside a class is literal in RE2, `&&`/`--`/`~~`
//! are not class operators in RE2, `\Q...\E` quoting, octal escapes, a `{` that does not
//! start a valid repetition is literal, and repetition counts above 1000 are errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// RE2's `kMaxRepeat`: larger counted repetitions are a syntax error.
const RE2_MAX_REPEAT: u32 = 1000;

/// A compiled GitLab `UntrustedRegexp`.
#[derive(Debug)]
pub struct Re2Regex {
    /// What GitLab hands RE2 (and compares in `UntrustedRegexp#==`): the body with a
    /// `(?flags)` prefix when the literal had flags.
    source: String,
    regex: regex::Regex,
}

impl Re2Regex {
    /// The RE2 source GitLab builds, e.g. `(?i)foo` for `/foo/i`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `UntrustedRegexp#scan(text).present?`: is there a match anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// `Gitlab::UntrustedRegexp::RubySyntax::PATTERN`.
fn ruby_syntax() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"(?m)^/(.*)/([ismU]*)$").ok())
        .as_ref()
}

/// How many fabricated patterns (and rejections) the process keeps. Pipelines repeat the
/// same few patterns across thousands of jobs; compiling is by far the costliest step.
const CACHE_LIMIT: usize = 4096;

type Cache = HashMap<String, Result<Arc<Re2Regex>, String>>;

/// [`fabricate`], memoized process-wide by text, so that a pattern repeated across jobs
/// (or a variable holding a pattern) is compiled once, and its lazy DFA warmed once.
pub fn fabricate_cached(text: &str) -> Result<Arc<Re2Regex>, String> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Ok(map) = cache.lock()
        && let Some(hit) = map.get(text)
    {
        return hit.clone();
    }
    let result = fabricate(text).map(Arc::new);
    if let Ok(mut map) = cache.lock() {
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(text.to_owned(), result.clone());
    }
    result
}

/// `RubySyntax.fabricate!(text)`: parse `/body/flags` and compile it as RE2 would.
pub fn fabricate(text: &str) -> Result<Re2Regex, String> {
    let caps = ruby_syntax()
        .and_then(|re| re.captures(text))
        .ok_or_else(|| "Invalid regular expression!".to_owned())?;
    let body = caps.get(1).map_or("", |m| m.as_str());
    let flags = caps.get(2).map_or("", |m| m.as_str());
    let source = if flags.is_empty() {
        body.to_owned()
    } else {
        format!("(?{flags}){body}")
    };
    let translated = translate(&source)?;
    let regex = regex::RegexBuilder::new(&translated)
        .build()
        .map_err(|e| first_line(&e.to_string()))?;
    Ok(Re2Regex { source, regex })
}

fn first_line(s: &str) -> String {
    // regex errors are multi-line diagrams; the last line carries the reason.
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
}

const ASCII_D: &str = "0-9";
const ASCII_W: &str = "0-9A-Za-z_";
const ASCII_S: &str = r"\t\n\x0C\r ";

/// Rewrites RE2 syntax into `regex` crate syntax with the same meaning, or explains why
/// RE2 would reject it (or why the `regex` crate cannot express it).
pub fn translate(src: &str) -> Result<String, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 8);
    let mut i = 0usize;
    let mut in_class = false;
    let mut last_was_repeat = false;
    while i < chars.len() {
        let c = chars[i];
        if in_class {
            match c {
                ']' => {
                    in_class = false;
                    out.push(']');
                    i += 1;
                }
                '[' => {
                    let posix_end = (chars.get(i + 1) == Some(&':'))
                        .then(|| find_seq(&chars, i + 2, &[':', ']']))
                        .flatten();
                    if let Some(end) = posix_end {
                        // POSIX class `[:alpha:]` / `[:^alpha:]`: same in both engines.
                        out.extend(&chars[i..end + 2]);
                        i = end + 2;
                    } else {
                        out.push_str(r"\[");
                        i += 1;
                    }
                }
                '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                    i += 1;
                }
                '-' if chars.get(i + 1) == Some(&'-') => {
                    out.push_str(r"\-");
                    i += 1;
                }
                '\\' => {
                    i = escape(&chars, i, true, &mut out)?;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
            continue;
        }
        // RE2 (Perl mode) rejects stacked repetition operators (`a**`, `a+*`, `a{2}{3}`,
        // `a*??`); the `regex` crate would accept them.
        let repeat_len = match c {
            '*' | '+' | '?' => Some(1),
            '{' => parse_repeat(&chars, i).map(|(_, _, end)| end - i),
            _ => None,
        };
        if let Some(len) = repeat_len {
            if last_was_repeat {
                return Err(format!(
                    "bad repetition operator: {}",
                    chars[i..i + len].iter().collect::<String>()
                ));
            }
            last_was_repeat = true;
        } else {
            last_was_repeat = false;
        }
        match c {
            '*' | '+' | '?' => {
                out.push(c);
                i += 1;
                // A `?` right after a repetition makes it non-greedy, not a new operator.
                if chars.get(i) == Some(&'?') {
                    out.push('?');
                    i += 1;
                }
            }
            '\\' => i = escape(&chars, i, false, &mut out)?,
            '[' => {
                in_class = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                // A `]` right after `[` or `[^` is a literal in RE2.
                if chars.get(i) == Some(&']') {
                    out.push_str(r"\]");
                    i += 1;
                }
            }
            '{' => match parse_repeat(&chars, i) {
                Some((min, max, end)) => {
                    if min > RE2_MAX_REPEAT || max.is_some_and(|m| m > RE2_MAX_REPEAT) {
                        return Err(format!(
                            "bad repetition operator: {}",
                            chars[i..end].iter().collect::<String>()
                        ));
                    }
                    out.extend(&chars[i..end]);
                    i = end;
                    if chars.get(i) == Some(&'?') {
                        out.push('?');
                        i += 1;
                    }
                }
                None => {
                    out.push_str(r"\{");
                    i += 1;
                }
            },
            '}' => {
                out.push_str(r"\}");
                i += 1;
            }
            '(' if chars.get(i + 1) == Some(&'?') => i = group_flags(&chars, i, &mut out)?,
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if in_class {
        return Err("missing closing ]".to_owned());
    }
    Ok(out)
}

fn find_seq(chars: &[char], from: usize, seq: &[char]) -> Option<usize> {
    (from..chars.len()).find(|&k| chars[k..].starts_with(seq))
}

/// `{n}`, `{n,}` or `{n,m}` starting at `i` (a `{`): `(min, max, end)`.
fn parse_repeat(chars: &[char], i: usize) -> Option<(u32, Option<u32>, usize)> {
    let mut j = i + 1;
    let num = |j: &mut usize| -> Option<u32> {
        let start = *j;
        while *j < chars.len() && chars[*j].is_ascii_digit() {
            *j += 1;
        }
        if *j == start {
            return None;
        }
        // Saturate absurd counts; they are rejected as too large anyway.
        Some(
            chars[start..*j]
                .iter()
                .collect::<String>()
                .parse::<u32>()
                .unwrap_or(u32::MAX),
        )
    };
    let min = num(&mut j)?;
    let max = match chars.get(j)? {
        '}' => Some(min),
        ',' => {
            j += 1;
            if chars.get(j) == Some(&'}') {
                None
            } else {
                Some(num(&mut j)?)
            }
        }
        _ => return None,
    };
    (chars.get(j) == Some(&'}')).then_some((min, max, j + 1))
}

/// `(?` at `i`: flag groups must only use RE2's flags (`imsU`); named groups pass.
fn group_flags(chars: &[char], i: usize, out: &mut String) -> Result<usize, String> {
    let mut j = i + 2;
    match chars.get(j) {
        Some('P') | Some('<') => {
            // Named group: both engines accept `(?P<name>` and `(?<name>`.
            out.push_str("(?");
            return Ok(j);
        }
        _ => {}
    }
    let mut seen = String::new();
    let mut negated = false;
    loop {
        match chars.get(j) {
            Some(&f @ ('i' | 'm' | 's' | 'U')) => {
                // RE2 accepts a repeated flag, the `regex` crate does not.
                if !seen.contains(f) || negated {
                    seen.push(f);
                }
                j += 1;
            }
            Some('-') if !negated => {
                negated = true;
                seen.push('-');
                j += 1;
            }
            Some(':') if seen.is_empty() => {
                // Non-capturing group `(?:...)`.
                out.push_str("(?:");
                return Ok(j + 1);
            }
            Some(&end @ (')' | ':')) => {
                if seen.is_empty() || seen.ends_with('-') {
                    return Err("missing argument to repetition operator or bad flags".to_owned());
                }
                out.push_str("(?");
                out.push_str(&seen);
                out.push(end);
                return Ok(j + 1);
            }
            Some(other) => return Err(format!("invalid or unsupported Perl flag: {other}")),
            None => return Err("missing closing )".to_owned()),
        }
    }
}

/// A backslash escape at `i`; returns the index after it.
fn escape(chars: &[char], i: usize, in_class: bool, out: &mut String) -> Result<usize, String> {
    let Some(&c) = chars.get(i + 1) else {
        return Err("trailing \\".to_owned());
    };
    let ascii = |neg: bool, set: &str, out: &mut String| {
        out.push_str(if neg { "[^" } else { "[" });
        out.push_str(set);
        out.push(']');
    };
    let mut next = i + 2;
    match c {
        'd' | 'w' | 's' if in_class => out.push_str(match c {
            'd' => ASCII_D,
            'w' => ASCII_W,
            _ => ASCII_S,
        }),
        'd' => ascii(false, ASCII_D, out),
        'D' => ascii(true, ASCII_D, out),
        'w' => ascii(false, ASCII_W, out),
        'W' => ascii(true, ASCII_W, out),
        's' => ascii(false, ASCII_S, out),
        'S' => ascii(true, ASCII_S, out),
        'b' | 'B' if in_class => return Err(format!("invalid escape sequence: \\{c}")),
        'b' => out.push_str(r"(?-u:\b)"),
        'B' => out.push_str(r"(?-u:\B)"),
        'C' => return Err("\\C (any byte) is not supported".to_owned()),
        'Q' => {
            let end = find_seq(chars, next, &['\\', 'E']).unwrap_or(chars.len());
            for &q in &chars[next..end] {
                let mut buf = [0u8; 4];
                out.push_str(&regex::escape(q.encode_utf8(&mut buf)));
            }
            next = (end + 2).min(chars.len());
        }
        'E' => {} // a stray \E is ignored by RE2
        '1'..='7' | '0' => {
            // RE2: `\0` or `\1`-`\7` followed by another octal digit start an octal
            // escape of up to three digits; a lone `\1`-`\7` is a backreference.
            if c != '0' && !chars.get(next).is_some_and(|d| ('0'..='7').contains(d)) {
                return Err(format!(
                    "invalid escape sequence: \\{c} (backreferences are not supported)"
                ));
            }
            let mut value = c.to_digit(8).unwrap_or(0);
            for _ in 0..2 {
                match chars.get(next).and_then(|d| d.to_digit(8)) {
                    Some(d) => {
                        value = value * 8 + d;
                        next += 1;
                    }
                    None => break,
                }
            }
            out.push_str(&format!("\\x{{{value:X}}}"));
        }
        '8' | '9' => return Err(format!("invalid escape sequence: \\{c}")),
        'p' | 'P' | 'x' if chars.get(next) == Some(&'{') => {
            // `\p{Greek}`, `\x{263a}`: copied whole, so the braces are not read as a
            // repetition. RE2 negates with `\p{^Greek}`, the `regex` crate with `\P{Greek}`.
            let close = (next..chars.len())
                .find(|&k| chars[k] == '}')
                .ok_or_else(|| format!("missing closing }} after \\{c}"))?;
            let mut body: &[char] = &chars[next + 1..close];
            let mut letter = c;
            if c != 'x' && body.first() == Some(&'^') {
                body = &body[1..];
                letter = if c == 'p' { 'P' } else { 'p' };
            }
            out.push('\\');
            out.push(letter);
            out.push('{');
            out.extend(body);
            out.push('}');
            next = close + 1;
        }
        _ => {
            out.push('\\');
            out.push(c);
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        match fabricate(pattern) {
            Ok(re) => re.is_match(text),
            Err(e) => panic!("{pattern}: {e}"),
        }
    }

    // RubySyntax: `/body/flags`, flags prefix the RE2 source as `(?flags)`
    // (spec/lib/gitlab/ci/pipeline/expression/lexeme/pattern_spec.rb: `(?i)pattern`, `(?im)pattern`).
    #[test]
    fn flags_prefix_source() {
        assert_eq!(
            fabricate("/pattern/i").map(|r| r.source().to_owned()),
            Ok("(?i)pattern".into())
        );
        assert_eq!(
            fabricate("/pattern/im").map(|r| r.source().to_owned()),
            Ok("(?im)pattern".into())
        );
        assert_eq!(
            fabricate("/pattern/").map(|r| r.source().to_owned()),
            Ok("pattern".into())
        );
    }

    // RubySyntax::PATTERN only allows the flags [ismU]; `x` makes the text not a pattern.
    #[test]
    fn x_flag_is_not_a_pattern() {
        assert!(fabricate("/a b/x").is_err());
    }

    // Not `/.../` at all: RegexpError 'Invalid regular expression!'.
    #[test]
    fn not_slash_delimited() {
        assert!(fabricate("foo").is_err());
        assert!(fabricate("/foo").is_err());
    }

    // RE2 rejects what it cannot run in linear time; so does the regex crate.
    #[test]
    fn re2_invalid_patterns() {
        for p in [
            "/ some ( thin/i",
            "/(a)\\1/",
            "/a(?=b)/",
            "/a{1001}/",
            "/\\C/",
            "/[a/",
        ] {
            assert!(fabricate(p).is_err(), "{p} should be rejected");
        }
    }

    // RE2 flag meanings: i folds case, m makes ^/$ line anchors, s lets . match \n,
    // U swaps greediness.
    #[test]
    fn re2_flag_semantics() {
        assert!(m("/VAR/i", "my var"));
        assert!(!m("/VAR/", "my var"));
        assert!(m("/^b$/m", "a\nb\nc"));
        assert!(!m("/^b$/", "a\nb\nc"));
        assert!(m("/a.b/s", "a\nb"));
        assert!(!m("/a.b/", "a\nb"));
        assert!(m("/a/ii", "A"), "RE2 accepts repeated flags");
    }

    // RE2's Perl classes are ASCII-only (re2 Syntax wiki: \d ≡ [0-9], \s ≡ [\t\n\f\r ],
    // \w ≡ [0-9A-Za-z_], \b ASCII word boundary).
    #[test]
    fn perl_classes_are_ascii() {
        assert!(!m(r"/\d/", "٣"));
        assert!(!m(r"/\w/", "é"));
        assert!(m(r"/\w/", "_"));
        assert!(!m(r"/\s/", "\u{a0}"));
        assert!(!m(r"/\s/", "\u{b}"), "RE2 \\s has no \\v");
        assert!(m(r"/\bfoo\b/", "a foo b"));
        assert!(m(r"/[\d\s]/", " "));
        assert!(m(r"/[^\D]/", "7"));
        assert!(!m(r"/[\W]/", "a"));
    }

    // RE2 literal forms the regex crate would reject or read differently.
    #[test]
    fn re2_literals() {
        assert!(m("/a{/", "a{"));
        assert!(m("/a{x}/", "a{x}"));
        assert!(m("/a{,2}/", "a{,2}"));
        assert!(m("/x}/", "x}"));
        assert!(m("/[[]/", "["));
        assert!(m("/[]a]/", "]"));
        assert!(m("/[a&&b]/", "&"));
        assert!(m("/[a~~b]/", "~"));
        assert!(m(r"/\Qa.b\E/", "a.b"));
        assert!(!m(r"/\Qa.b\E/", "axb"));
        assert!(m(r"/\101/", "A"), "octal escape");
        assert!(m(r"/\0/", "\0"));
        assert!(m("/[[:alpha:]]+/", "abc"));
        assert!(m("/a{2,3}/", "aaa"));
        assert!(m("/(?i:A)b/", "ab"));
        assert!(m("/(?P<n>a)/", "a"));
        assert!(m("/(?:ab)+c/", "ababc"));
        assert!(m(r"/\p{^Greek}/", "a"));
        assert!(!m(r"/^\p{^Greek}$/", "α"));
        assert!(m("/a??b/", "ab"));
        assert!(m(r"/\p{Greek}+/", "αβ"));
        assert!(m(r"/\x{263a}/", "☺"));
        assert!(m(r"/[\p{Greek}x]/", "x"));
        assert!(m("/a{1,2}?b/", "ab"));
        assert!(m("/(?i-s:A.)/", "a-"));
    }
}
