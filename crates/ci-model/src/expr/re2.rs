//! GitLab's regular expressions for CI expressions: `Gitlab::UntrustedRegexp` (RE2) and
//! its `RubySyntax` front end (`lib/gitlab/untrusted_regexp.rb`,
//! `lib/gitlab/untrusted_regexp/ruby_syntax.rb` in gitlabhq), run on the `regex` crate.
//!
//! `RubySyntax.fabricate!` matches the text against `^/(?<regexp>.*)/(?<flags>[ismU]*)$`
//! (Ruby: `^`/`$` are line anchors, `.` stops at `\n`) and hands RE2 the body prefixed
//! with `(?flags)` when flags are present. So the flags mean what RE2 says: `i` case
//! folding, `m` multi-line `^`/`$`, `s` dot matches `\n`, `U` ungreedy; `x` is not a
//! flag at all. An invalid pattern is a `RegexpError` in GitLab.
//!
//! RE2 syntax differs from the `regex` crate's, so [`translate`] parses the pattern with
//! RE2's grammar and writes it out for the `regex` crate with the same matches: `\d \w \s
//! \b` are ASCII in RE2; classes have no nesting or set operators (`[[]`, `[a&&b]` are
//! literal) and RE2 validates ranges and POSIX class names; `\Q...\E`, octal and
//! punctuation escapes; a `{` that is no valid repetition is literal; stacked repetitions
//! (`a**`) and repetition products above 1000 (`(a{100}){100}`) are errors; a flag group
//! is transparent to a following repetition (`a(?i)*`). `tests/expr_re2_differential.rs`
//! checks all this against real RE2. Known gap: RE2's `\C` (any byte) is rejected.

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

/// RE2's POSIX class names (`[[:alpha:]]`); any other name is an error in RE2.
const POSIX_CLASSES: &[&str] = &[
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space",
    "upper", "word", "xdigit",
];

/// Rewrites RE2 syntax into `regex` crate syntax with the same matches, or explains why
/// RE2 would reject it (or why the `regex` crate cannot express it). Checked against real
/// RE2 by `tests/expr_re2_differential.rs`.
pub fn translate(src: &str) -> Result<String, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut t = Translator {
        chars: &chars,
        i: 0,
        out: String::with_capacity(src.len() + 8),
        pending_flags: String::new(),
        last_was_repeat: false,
        frames: vec![1],
        last_atom: 1,
    };
    t.run()?;
    Ok(t.out)
}

struct Translator<'a> {
    chars: &'a [char],
    i: usize,
    out: String,
    /// Flag groups like `(?i)` not yet written: RE2 lets a repetition operator right after
    /// one apply to the atom before it (`a(?i)*`), the `regex` crate does not, so the
    /// flags are written after that operator.
    pending_flags: String,
    /// RE2 (Perl mode) rejects stacked repetition operators (`a**`, `a{2}{3}`).
    last_was_repeat: bool,
    /// Per open group, the largest product of nested repetition counts inside it: RE2
    /// rejects a pattern where such a product exceeds 1000 (`(a{100}){100}`).
    frames: Vec<u64>,
    /// That product for the atom just written (the one a repetition would apply to).
    last_atom: u64,
}

impl Translator<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn atom_done(&mut self, product: u64) {
        self.last_atom = product;
        if let Some(top) = self.frames.last_mut() {
            *top = (*top).max(product);
        }
    }

    fn run(&mut self) -> Result<(), String> {
        while self.i < self.chars.len() {
            if self.repetition()? {
                continue;
            }
            self.out.push_str(&std::mem::take(&mut self.pending_flags));
            self.last_was_repeat = false;
            let c = self.chars[self.i];
            match c {
                '\\' => self.escape()?,
                '[' => self.class()?,
                '(' => self.group()?,
                ')' => {
                    self.out.push(')');
                    self.i += 1;
                    if self.frames.len() > 1 {
                        let inner = self.frames.pop().unwrap_or(1);
                        self.atom_done(inner);
                    }
                }
                '{' => {
                    // Not a valid repetition (checked above): a literal in RE2.
                    self.out.push_str(r"\{");
                    self.i += 1;
                    self.atom_done(1);
                }
                '}' => {
                    self.out.push_str(r"\}");
                    self.i += 1;
                    self.atom_done(1);
                }
                _ => {
                    self.out.push(c);
                    self.i += 1;
                    self.atom_done(1);
                }
            }
        }
        self.out.push_str(&std::mem::take(&mut self.pending_flags));
        if self
            .frames
            .first()
            .is_some_and(|&p| p > u64::from(RE2_MAX_REPEAT))
        {
            return Err("invalid repetition size: nested repetitions exceed 1000".to_owned());
        }
        Ok(())
    }

    /// A repetition operator at the cursor: written out with its non-greedy `?`.
    fn repetition(&mut self) -> Result<bool, String> {
        let c = self.chars[self.i];
        let (len, count) = match c {
            '*' | '+' | '?' => (1, None),
            '{' => match parse_repeat(self.chars, self.i) {
                Some((min, max, end)) => (end - self.i, Some((min, max))),
                None => return Ok(false),
            },
            _ => return Ok(false),
        };
        let text: String = self.chars[self.i..self.i + len].iter().collect();
        if self.last_was_repeat {
            return Err(format!("bad repetition operator: {text}"));
        }
        if let Some((min, max)) = count {
            if min > RE2_MAX_REPEAT || max.is_some_and(|m| m > RE2_MAX_REPEAT) {
                return Err(format!("invalid repetition size: {text}"));
            }
            if max.is_some_and(|m| m < min) {
                return Err(format!("invalid repetition size: {text}"));
            }
            let m = u64::from(max.unwrap_or(min));
            if m > 0 {
                let product = self.last_atom.saturating_mul(m);
                self.atom_done(product);
            }
        }
        self.out.push_str(&text);
        self.i += len;
        if self.peek(0) == Some('?') {
            self.out.push('?');
            self.i += 1;
        }
        self.last_was_repeat = true;
        Ok(true)
    }

    /// `(`: a group, or `(?flags)`, `(?flags:`, `(?P<name>`, `(?<name>`.
    fn group(&mut self) -> Result<(), String> {
        if self.peek(1) != Some('?') {
            self.out.push('(');
            self.i += 1;
            self.frames.push(1);
            return Ok(());
        }
        let named = match (self.peek(2), self.peek(3)) {
            (Some('P'), Some('<')) => Some(4),
            (Some('<'), Some(c)) if c != '=' && c != '!' => Some(3),
            _ => None,
        };
        if let Some(len) = named {
            let text: String = self.chars[self.i..self.i + len].iter().collect();
            self.out.push_str(&text);
            self.i += len;
            self.frames.push(1);
            return Ok(());
        }
        let mut on = String::new();
        let mut off = String::new();
        let mut negated = false;
        let mut saw_flag = false;
        let mut j = self.i + 2;
        loop {
            match self.chars.get(j).copied() {
                Some(f @ ('i' | 'm' | 's' | 'U')) => {
                    let (set, other) = if negated {
                        (&mut off, &mut on)
                    } else {
                        (&mut on, &mut off)
                    };
                    if !set.contains(f) {
                        set.push(f);
                    }
                    // Later wins, as RE2 applies the flags in order.
                    other.retain(|x| x != f);
                    saw_flag = true;
                }
                Some('-') if !negated => {
                    negated = true;
                    saw_flag = false;
                }
                Some(end @ (')' | ':')) => {
                    if negated && !saw_flag {
                        return Err("invalid perl operator: (?-)".to_owned());
                    }
                    let mut flags = on;
                    if !off.is_empty() {
                        flags.push('-');
                        flags.push_str(&off);
                    }
                    self.i = j + 1;
                    if end == ':' {
                        self.out.push_str("(?");
                        self.out.push_str(&flags);
                        self.out.push(':');
                        self.frames.push(1);
                    } else if !flags.is_empty() {
                        self.pending_flags.push_str(&format!("(?{flags})"));
                    }
                    return Ok(());
                }
                Some(other) => return Err(format!("invalid or unsupported Perl flag: {other}")),
                None => return Err("missing closing )".to_owned()),
            }
            j += 1;
        }
    }

    /// A backslash escape outside a class.
    fn escape(&mut self) -> Result<(), String> {
        let Some(c) = self.peek(1) else {
            return Err("trailing \\".to_owned());
        };
        match c {
            'd' | 'D' | 'w' | 'W' | 's' | 'S' => {
                let (neg, set) = perl_class(c);
                self.out.push_str(if neg { "[^" } else { "[" });
                self.out.push_str(set);
                self.out.push(']');
                self.i += 2;
            }
            'b' | 'B' => {
                self.out
                    .push_str(if c == 'b' { r"(?-u:\b)" } else { r"(?-u:\B)" });
                self.i += 2;
            }
            'A' | 'z' => {
                self.out.push('\\');
                self.out.push(c);
                self.i += 2;
            }
            'p' | 'P' => {
                self.i = unicode_class(self.chars, self.i, &mut self.out)?;
            }
            'Q' => {
                // Literal text up to `\E` (or the end).
                let start = self.i + 2;
                let end = find_seq(self.chars, start, &['\\', 'E']).unwrap_or(self.chars.len());
                for k in start..end {
                    push_literal(&mut self.out, self.chars[k], false);
                    self.atom_done(1);
                }
                self.i = (end + 2).min(self.chars.len());
                return Ok(());
            }
            'C' => return Err("\\C (any byte) is not supported by podci".to_owned()),
            _ => {
                let (rune, next) = escaped_rune(self.chars, self.i)?;
                push_literal(&mut self.out, rune, false);
                self.i = next;
            }
        }
        self.atom_done(1);
        Ok(())
    }

    /// A character class, parsed with RE2's rules and written item by item, so that
    /// nothing in it is read as the `regex` crate's nested classes or set operators.
    fn class(&mut self) -> Result<(), String> {
        let chars = self.chars;
        let mut j = self.i + 1;
        self.out.push('[');
        if chars.get(j) == Some(&'^') {
            self.out.push('^');
            j += 1;
        }
        let mut first = true;
        loop {
            let Some(&c) = chars.get(j) else {
                return Err("missing ]".to_owned());
            };
            if c == ']' && !first {
                self.out.push(']');
                self.i = j + 1;
                self.atom_done(1);
                return Ok(());
            }
            first = false;
            if c == '['
                && chars.get(j + 1) == Some(&':')
                && let Some(end) = find_seq(chars, j + 2, &[':', ']'])
            {
                let name: String = chars[j + 2..end].iter().collect();
                if !POSIX_CLASSES.contains(&name.trim_start_matches('^')) {
                    return Err(format!("invalid character class range: [:{name}:]"));
                }
                self.out.push_str(&format!("[:{name}:]"));
                j = end + 2;
                continue;
            }
            if c == '\\' {
                match chars.get(j + 1) {
                    Some('p' | 'P') => {
                        j = unicode_class(chars, j, &mut self.out)?;
                        continue;
                    }
                    Some(&p @ ('d' | 'D' | 'w' | 'W' | 's' | 'S')) => {
                        let (neg, set) = perl_class(p);
                        if neg {
                            self.out.push_str(&format!("[^{set}]"));
                        } else {
                            self.out.push_str(set);
                        }
                        j += 2;
                        continue;
                    }
                    _ => {}
                }
            }
            let (lo, next) = class_char(chars, j)?;
            j = next;
            push_literal(&mut self.out, lo, true);
            // `-` makes a range unless it is last (`[a-]`).
            if chars.get(j) == Some(&'-') && chars.get(j + 1).is_some_and(|&n| n != ']') {
                let (hi, next) = class_char(chars, j + 1)?;
                if hi < lo {
                    return Err(format!("invalid character class range: {lo}-{hi}"));
                }
                self.out.push('-');
                push_literal(&mut self.out, hi, true);
                j = next;
            }
        }
    }
}

fn perl_class(c: char) -> (bool, &'static str) {
    match c {
        'd' => (false, ASCII_D),
        'D' => (true, ASCII_D),
        'w' => (false, ASCII_W),
        'W' => (true, ASCII_W),
        's' => (false, ASCII_S),
        _ => (true, ASCII_S),
    }
}

/// Writes one literal character so the `regex` crate reads it as itself.
fn push_literal(out: &mut String, c: char, in_class: bool) {
    let special = if in_class {
        matches!(c, '\\' | '[' | ']' | '^' | '-' | '&' | '~')
    } else {
        regex_syntax_meta(c)
    };
    if c.is_control() {
        out.push_str(&format!("\\x{{{:X}}}", c as u32));
    } else if special {
        out.push('\\');
        out.push(c);
    } else {
        out.push(c);
    }
}

fn regex_syntax_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

/// One character of a class: itself, or an escape that stands for one character.
fn class_char(chars: &[char], j: usize) -> Result<(char, usize), String> {
    match chars.get(j) {
        Some('\\') => escaped_rune(chars, j),
        Some(&c) => Ok((c, j + 1)),
        None => Err("missing ]".to_owned()),
    }
}

/// An escape standing for one character (RE2's `ParseEscape`): octal, `\x41`, `\x{263a}`,
/// `\a \f \t \n \r \v`, or escaped ASCII punctuation. Anything else is an error in RE2.
fn escaped_rune(chars: &[char], i: usize) -> Result<(char, usize), String> {
    let Some(&c) = chars.get(i + 1) else {
        return Err("trailing \\".to_owned());
    };
    let mut next = i + 2;
    let rune = match c {
        '1'..='7' | '0' => {
            // `\0`, or `\1`-`\7` followed by another octal digit, start an octal escape of
            // up to three digits; a lone `\1`-`\7` would be a backreference.
            if c != '0' && !chars.get(next).is_some_and(|d| ('0'..='7').contains(d)) {
                return Err(format!("invalid escape sequence: \\{c}"));
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
            char::from_u32(value)
        }
        'x' => {
            if chars.get(next) == Some(&'{') {
                let close = (next..chars.len())
                    .find(|&k| chars[k] == '}')
                    .ok_or_else(|| "invalid escape sequence: \\x{".to_owned())?;
                let hex: String = chars[next + 1..close].iter().collect();
                next = close + 1;
                u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
            } else {
                let hex: String = chars.get(next..next + 2).unwrap_or_default().iter().collect();
                next += 2;
                if hex.len() == 2 {
                    u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                } else {
                    None
                }
            }
        }
        'a' => Some('\u{7}'),
        'f' => Some('\u{c}'),
        't' => Some('\t'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        'v' => Some('\u{b}'),
        c if c.is_ascii_punctuation() => Some(c),
        _ => None,
    };
    rune.map(|r| (r, next))
        .ok_or_else(|| format!("invalid escape sequence: \\{c}"))
}

/// `\pL`, `\p{Greek}`, `\P{Greek}`, `\p{^Greek}` at `i`; returns the index after it.
fn unicode_class(chars: &[char], i: usize, out: &mut String) -> Result<usize, String> {
    let letter = chars.get(i + 1).copied().unwrap_or('p');
    match chars.get(i + 2) {
        Some('{') => {
            let close = (i + 2..chars.len())
                .find(|&k| chars[k] == '}')
                .ok_or_else(|| format!("missing closing }} after \\{letter}"))?;
            let mut body: &[char] = &chars[i + 3..close];
            let mut letter = letter;
            // RE2 negates with `\p{^Greek}`, the `regex` crate with `\P{Greek}`.
            if body.first() == Some(&'^') {
                body = &body[1..];
                letter = if letter == 'p' { 'P' } else { 'p' };
            }
            out.push('\\');
            out.push(letter);
            out.push('{');
            out.extend(body);
            out.push('}');
            Ok(close + 1)
        }
        Some(&name) => {
            out.push('\\');
            out.push(letter);
            out.push(name);
            Ok(i + 3)
        }
        None => Err(format!("invalid escape sequence: \\{letter}")),
    }
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
