//! Tokenizer for GitLab CI expressions, mirroring `Gitlab::Ci::Pipeline::Expression::Lexer`
//! (`lib/gitlab/ci/pipeline/expression/lexer.rb` and `lexeme/*.rb` in gitlabhq).
//!
//! GitLab scans with a Ruby `StringScanner`: skip `\s+`, then try each lexeme's regex
//! anchored at the current position, in a fixed order. The first character of every
//! lexeme is distinct, so the order only matters for error reporting. Token regexes:
//!
//! | lexeme            | GitLab regex                              |
//! |-------------------|-------------------------------------------|
//! | ParenthesisOpen   | `\(`                                      |
//! | ParenthesisClose  | `\)`                                      |
//! | Variable          | `\$(?<name>\w+)` (Ruby `\w` is ASCII)     |
//! | String            | `("(?<string>.*?)")\|('(?<string>.*?)')`  |
//! | Pattern           | `^\/([^\/]\|\\/)+[^\\]\/[ismU]*`          |
//! | Null              | `null`                                    |
//! | Equals, Matches   | `==`, `=~`                                |
//! | NotEquals, NotMatches | `!=`, `!~`                            |
//! | And, Or           | `&&`, `\|\|`                              |

use std::sync::OnceLock;

use super::{ExprError, Op};

/// GitLab's `Lexer::MAX_TOKENS`. The lexer loops this many times and raises
/// "Too many tokens!" if input remains, so at most `MAX_TOKENS - 1` tokens are accepted.
pub(crate) const MAX_TOKENS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokKind {
    LParen,
    RParen,
    /// Variable name without the `$`.
    Variable(String),
    /// String contents and the quote character that delimited it.
    Str(String, char),
    /// The raw pattern token text, e.g. `/foo\/bar/i`.
    Pattern(String),
    Null,
    /// `true` / `false` (GitLab's `Lexeme::Boolean`, added for `spec:inputs` rules).
    Bool(bool),
    Op(Op),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokKind,
    /// Byte offset of the token's first character in the source.
    pub offset: usize,
}

/// Ruby's `\s`: `[ \t\r\n\f\v]`.
fn is_ruby_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0c | 0x0b)
}

/// Ruby's (ASCII) `\w`.
fn is_ruby_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The Pattern lexeme's regex. The `regex` crate uses leftmost-first semantics, so on
/// this backtracking-free pattern it picks the same match as Ruby's backtracking engine.
fn pattern_lexeme() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    // A fixed pattern: `None` is impossible in practice and every unit test would catch it.
    RE.get_or_init(|| regex::Regex::new(r"\A/([^/]|\\/)+[^\\]/[ismU]*").ok())
        .as_ref()
}

/// Splits `src` into tokens the way GitLab's lexer does.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ExprError> {
    let bytes = src.as_bytes();
    let mut pos = 0usize;
    let mut tokens = Vec::new();
    for _ in 0..MAX_TOKENS {
        while pos < bytes.len() && is_ruby_space(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            return Ok(tokens);
        }
        let (kind, len) = scan_one(src, pos).ok_or_else(|| ExprError::UnknownLexeme {
            offset: pos,
            found: snippet(src, pos),
            hint: hint(src.get(pos..).unwrap_or_default(), tokens.last().map(|t| &t.kind)),
        })?;
        tokens.push(Token { kind, offset: pos });
        pos += len;
    }
    // GitLab checks for the end of input only at the top of each iteration, so the
    // 100th token is rejected even when nothing follows it.
    Err(ExprError::TooManyTokens {
        offset: tokens.last().map_or(0, |t| t.offset),
        max: MAX_TOKENS - 1,
    })
}

/// A short excerpt of the source at `pos` for error messages: up to the next whitespace.
fn snippet(src: &str, pos: usize) -> String {
    src.get(pos..)
        .unwrap_or_default()
        .chars()
        .take_while(|c| !c.is_whitespace())
        .take(20)
        .collect()
}

/// Advice for the mistakes people make most with this grammar, from the text that could
/// not be read and the token before it.
fn hint(rest: &str, prev: Option<&TokKind>) -> &'static str {
    let glued = |c: char| c.is_ascii_alphanumeric() || c == '\\' || c == '\'' || c == '"';
    match prev {
        Some(TokKind::Pattern(_)) if rest.starts_with(|c: char| c.is_ascii_alphabetic()) => {
            return " (a /pattern/ takes only the flags i, m, s, U)";
        }
        Some(TokKind::Str(..)) if rest.starts_with(glued) => {
            return " (a string ends at the next matching quote on its line; there are no escapes)";
        }
        Some(TokKind::Variable(_)) if rest.starts_with(['-', '.', ':']) => {
            return " (a variable name has only ASCII letters, digits and _)";
        }
        _ => {}
    }
    if rest.starts_with("${") {
        " (write $VAR, not ${VAR})"
    } else if rest.starts_with('$') {
        " (a variable name is $ followed by ASCII letters, digits or _)"
    } else if rest.starts_with('=') || rest.starts_with('!') {
        " (the operators are ==, !=, =~ and !~)"
    } else if rest.starts_with('&') || rest.starts_with('|') {
        " (the logical operators are && and ||)"
    } else if rest.starts_with('"') || rest.starts_with('\'') {
        " (a string ends at the next matching quote on the same line; there are no escapes)"
    } else if rest.starts_with('/') {
        " (a /pattern/ has at least two characters between the slashes, escapes / as \\/ and takes only the flags i, m, s, U)"
    } else if rest.get(..4).is_some_and(|w| w.eq_ignore_ascii_case("true"))
        || rest.get(..5).is_some_and(|w| w.eq_ignore_ascii_case("false"))
    {
        " (boolean literals are lowercase `true`/`false`; to compare with text use a string, e.g. $VAR == \"True\")"
    } else if rest.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        " (quote text as a string: \"text\")"
    } else {
        ""
    }
}

fn scan_one(src: &str, pos: usize) -> Option<(TokKind, usize)> {
    let rest = src.get(pos..)?;
    let b = rest.as_bytes();
    match b.first()? {
        b'(' => Some((TokKind::LParen, 1)),
        b')' => Some((TokKind::RParen, 1)),
        b'$' => {
            let n = b[1..].iter().take_while(|&&c| is_ruby_word(c)).count();
            (n > 0).then(|| (TokKind::Variable(rest[1..1 + n].to_owned()), 1 + n))
        }
        q @ (b'"' | b'\'') => {
            // `.*?` with Ruby's `.`: the first matching quote on the same line.
            let q = *q;
            let end = b[1..].iter().position(|&c| c == q || c == b'\n')?;
            (b[1 + end] == q).then(|| (TokKind::Str(rest[1..1 + end].to_owned(), q as char), end + 2))
        }
        b'/' => {
            let m = pattern_lexeme()?.find(rest)?;
            Some((TokKind::Pattern(m.as_str().to_owned()), m.end()))
        }
        b'n' if rest.starts_with("null") => Some((TokKind::Null, 4)),
        b't' if keyword(rest, "true") => Some((TokKind::Bool(true), 4)),
        b'f' if keyword(rest, "false") => Some((TokKind::Bool(false), 5)),
        _ => {
            let op = match b.get(..2)? {
                b"==" => Op::Equals,
                b"=~" => Op::Matches,
                b"!=" => Op::NotEquals,
                b"!~" => Op::NotMatches,
                b"&&" => Op::And,
                b"||" => Op::Or,
                _ => return None,
            };
            Some((TokKind::Op(op), 2))
        }
    }
}

/// `word` at the start of `rest`, not followed by a word character.
fn keyword(rest: &str, word: &str) -> bool {
    rest.starts_with(word)
        && !rest[word.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}
