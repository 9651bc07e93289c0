//! Streaming masking of job trace bytes.
//!
//! Owns: which variable values get masked ([`is_maskable`], [`masked_values`]), and the
//! [`Masker`] that replaces them, and GitLab token prefixes, with `[MASKED]` in a byte
//! stream cut into arbitrary chunks. The executor feeds every chunk it reads from a job
//! through one `Masker` before the bytes reach any sink.
//!
//! Semantics (one-shot and streaming agree byte for byte):
//! - Scanning left to right, the leftmost occurrence of any pattern wins; among patterns
//!   starting at the same byte the longest wins (so of two secrets where one is a prefix
//!   of the other, the longer is masked whole when it is there).
//! - A secret occurrence becomes `[MASKED]`.
//! - A token prefix (`glpat-`, ...) followed by at least one token byte
//!   (`[0-9A-Za-z_.=-]`, GitLab Runner's `tokensanitizer` alphabet) keeps the prefix and
//!   replaces the whole run of token bytes: `glpat-[MASKED]`. A prefix not followed by a
//!   token byte is ordinary text.
//! - Unlike GitLab Runner, the number of prefixes is not capped at 10.
//!
//! Streaming holds back only the tail of the input that could still be the start of a
//! pattern (at most the longest pattern's length), so output lags input by that much.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};

use crate::payload::JobPayload;

/// What replaces a secret.
pub const MASK: &[u8] = b"[MASKED]";

/// Token prefixes GitLab Runner masks by default or that GitLab sends in
/// `features.token_mask_prefixes` (personal, runner, deploy, CI build, pipeline trigger,
/// feed, incoming mail, agent, OAuth application secret, SCIM OAuth, runner registration).
pub const DEFAULT_TOKEN_PREFIXES: &[&str] = &[
    "glpat-",
    "glrt-",
    "gldt-",
    "glcbt-",
    "glptt-",
    "glft-",
    "glimt-",
    "glagent-",
    "gloas-",
    "glsoat-",
    "GR1348941",
];

/// GitLab's minimum length of a value that can be masked.
pub const MIN_MASKED_LEN: usize = 8;

/// Whether GitLab accepts `value` for a masked variable: at least 8 characters, one line,
/// only the Base64 alphabet (RFC 4648, both the standard and the URL-safe variant) plus
/// `@`, `:`, `.` and `~`.
pub fn is_maskable(value: &str) -> bool {
    value.len() >= MIN_MASKED_LEN
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'@' | b':' | b'.' | b'~')
        })
}

/// The phrases a job's trace must not show: the values of variables marked `masked`
/// that are at least [`MIN_MASKED_LEN`] long (shorter ones would mask ordinary words;
/// GitLab refuses to mask them anyway), the job token, and for each the URL-encoded form
/// when it differs (a secret pasted into a URL by a script). The charset rule of
/// [`is_maskable`] is GitLab's server-side validation; a value outside it that still
/// arrives as masked is masked all the same, since masking more is the safe direction.
/// Base64 forms are not added: a secret's base64 depends on its alignment in the encoded
/// stream, so no fixed phrase covers it.
pub fn masked_values(payload: &JobPayload) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |v: &str| {
        if v.len() >= MIN_MASKED_LEN && !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
        let enc = url_encode(v);
        if enc != v && enc.len() >= MIN_MASKED_LEN && !out.contains(&enc) {
            out.push(enc);
        }
    };
    for var in payload.variables.iter().filter(|v| v.masked) {
        push(&var.value);
    }
    push(&payload.token);
    out
}

/// The token prefixes for a job: GitLab's `features.token_mask_prefixes` plus the
/// defaults, deduplicated, blanks dropped.
pub fn token_prefixes(payload: &JobPayload) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let all = payload
        .features
        .token_mask_prefixes
        .iter()
        .map(String::as_str)
        .chain(DEFAULT_TOKEN_PREFIXES.iter().copied());
    for p in all {
        let p = p.trim();
        if !p.is_empty() && !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    out
}

/// Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, the rest `%XX`.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
    out
}

/// Bytes that continue a token after its prefix (GitLab Runner's token alphabet).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'=')
}

/// Replaces secrets and tokens in a stream of trace bytes.
///
/// ```
/// use podci_model::mask::Masker;
/// let mut m = Masker::new(["s3cr3t-value"], ["glpat-"]);
/// let mut out = m.write(b"pass=s3cr3t-");
/// out.extend(m.write(b"value tok=glpat-abc"));
/// out.extend(m.write(b"DEF end"));
/// out.extend(m.finish());
/// assert_eq!(out, b"pass=[MASKED] tok=glpat-[MASKED] end");
/// ```
#[derive(Debug, Clone)]
pub struct Masker {
    /// Secrets first, then token prefixes; pattern ids below `n_secrets` are secrets.
    ac: Option<AhoCorasick>,
    n_secrets: usize,
    /// All patterns sorted, to ask "could the held-back tail still become a match?".
    sorted: Vec<Vec<u8>>,
    /// First bytes of any pattern, to skip that question for most tail bytes.
    first: [bool; 256],
    /// Longest number of bytes a match decision needs to see from its start.
    horizon: usize,
    pending: Vec<u8>,
    /// Inside a token's run of token bytes whose `[MASKED]` was already written.
    in_token: bool,
}

impl Masker {
    /// A masker for `secrets` (replaced whole) and token `prefixes` (kept, the token
    /// after them replaced). Empty strings are ignored.
    pub fn new<S, P>(secrets: S, prefixes: P) -> Self
    where
        S: IntoIterator,
        S::Item: AsRef<str>,
        P: IntoIterator,
        P::Item: AsRef<str>,
    {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for s in secrets {
            let s = s.as_ref().as_bytes();
            if !s.is_empty() && !patterns.iter().any(|p| p == s) {
                patterns.push(s.to_vec());
            }
        }
        let n_secrets = patterns.len();
        let mut prefix_list: Vec<Vec<u8>> = Vec::new();
        for p in prefixes {
            let p = p.as_ref().trim().as_bytes();
            if !p.is_empty() && !prefix_list.iter().any(|q| q == p) {
                prefix_list.push(p.to_vec());
            }
        }
        let horizon = patterns
            .iter()
            .map(Vec::len)
            .chain(prefix_list.iter().map(|p| p.len() + 1))
            .max()
            .unwrap_or(0);
        patterns.extend(prefix_list);
        let mut first = [false; 256];
        for p in &patterns {
            if let Some(&b) = p.first() {
                first[usize::from(b)] = true;
            }
        }
        let ac = if patterns.is_empty() {
            None
        } else {
            // Building only fails for pattern sets far beyond any job's; masking nothing
            // is not an option then, so fall back to the slower NFA that has no such limit.
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .or_else(|_| {
                    AhoCorasickBuilder::new()
                        .match_kind(MatchKind::LeftmostLongest)
                        .kind(Some(aho_corasick::AhoCorasickKind::NoncontiguousNFA))
                        .build(&patterns)
                })
                .ok()
        };
        let mut sorted = patterns;
        sorted.sort();
        Masker {
            ac,
            n_secrets,
            sorted,
            first,
            horizon,
            pending: Vec::new(),
            in_token: false,
        }
    }

    /// A masker for a job: [`masked_values`] and [`token_prefixes`].
    pub fn for_job(payload: &JobPayload) -> Self {
        Masker::new(masked_values(payload), token_prefixes(payload))
    }

    /// Masks one chunk; returns the bytes that are now certain, holding back a tail that
    /// might still be the start of a secret.
    pub fn write(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + self.pending.len());
        if self.pending.is_empty() {
            let keep = self.process(chunk, false, &mut out);
            self.pending.extend_from_slice(&chunk[keep..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(chunk);
            let keep = self.process(&buf, false, &mut out);
            buf.drain(..keep);
            self.pending = buf;
        }
        out
    }

    /// Flushes what was held back, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let buf = std::mem::take(&mut self.pending);
        let mut out = Vec::with_capacity(buf.len());
        self.process(&buf, true, &mut out);
        self.in_token = false;
        out
    }

    /// Masks a whole byte string at once.
    pub fn mask_all(&self, data: &[u8]) -> Vec<u8> {
        let mut m = Masker {
            pending: Vec::new(),
            in_token: false,
            ..self.clone()
        };
        let mut out = m.write(data);
        out.extend(m.finish());
        out
    }

    /// Writes the decided part of `buf` to `out`; returns the index from which `buf`
    /// must be held back.
    fn process(&mut self, buf: &[u8], eof: bool, out: &mut Vec<u8>) -> usize {
        let len = buf.len();
        let mut pos = 0;
        if self.in_token {
            while pos < len && is_token_byte(buf[pos]) {
                pos += 1;
            }
            if pos == len {
                return len;
            }
            self.in_token = false;
        }
        let Some(ac) = &self.ac else {
            out.extend_from_slice(&buf[pos..]);
            return len;
        };
        // Positions below `decided` have every possible match start fully in view.
        let decided = if eof {
            len
        } else {
            (len + 1).saturating_sub(self.horizon)
        };
        let mut search = pos;
        let mut stop = len;
        while search < len {
            let Some(m) = ac.find(Input::new(buf).range(search..len)) else {
                break;
            };
            let s = m.start();
            if s >= decided {
                stop = s;
                break;
            }
            if m.pattern().as_usize() < self.n_secrets {
                out.extend_from_slice(&buf[pos..s]);
                out.extend_from_slice(MASK);
                pos = m.end();
                search = pos;
                continue;
            }
            let e = m.end();
            if e < len && is_token_byte(buf[e]) {
                out.extend_from_slice(&buf[pos..e]);
                out.extend_from_slice(MASK);
                let mut r = e;
                while r < len && is_token_byte(buf[r]) {
                    r += 1;
                }
                pos = r;
                search = r;
                if r == len && !eof {
                    self.in_token = true;
                    return len;
                }
            } else {
                // A bare prefix is text; a pattern may still start inside it.
                search = s + 1;
            }
        }
        if eof {
            out.extend_from_slice(&buf[pos..]);
            return len;
        }
        // Emit up to the first undecided byte: the next match start, or the first tail
        // position whose remaining bytes are the beginning of some pattern.
        let mut keep = stop.max(pos);
        for p in decided.max(pos)..keep {
            if self.first[usize::from(buf[p])] && self.could_start(&buf[p..]) {
                keep = p;
                break;
            }
        }
        out.extend_from_slice(&buf[pos..keep]);
        keep
    }

    /// Whether `tail` is the beginning of (or equal to) some pattern.
    fn could_start(&self, tail: &[u8]) -> bool {
        let i = self.sorted.partition_point(|p| p.as_slice() < tail);
        self.sorted.get(i).is_some_and(|p| p.starts_with(tail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(m: &Masker, data: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut m = m.clone();
        let mut out = Vec::new();
        let mut last = 0;
        for &c in cuts {
            let c = c.clamp(last, data.len());
            out.extend(m.write(&data[last..c]));
            last = c;
        }
        out.extend(m.write(&data[last..]));
        out.extend(m.finish());
        out
    }

    fn every_split(m: &Masker, data: &[u8], want: &[u8]) {
        assert_eq!(m.mask_all(data), want, "one-shot");
        for i in 0..=data.len() {
            for j in i..=data.len() {
                assert_eq!(stream(m, data, &[i, j]), want, "cuts at {i},{j}");
            }
        }
        // byte by byte
        let cuts: Vec<usize> = (0..=data.len()).collect();
        assert_eq!(stream(m, data, &cuts), want, "byte by byte");
    }

    #[test]
    fn secrets_that_are_prefixes_of_each_other() {
        let m = Masker::new(["abcdefgh", "abcdefghijkl"], Vec::<String>::new());
        every_split(&m, b"x abcdefghijkl y", b"x [MASKED] y");
        every_split(&m, b"x abcdefghij y", b"x [MASKED]ij y");
        every_split(&m, b"abcdefgh", b"[MASKED]");
    }

    #[test]
    fn overlapping_secrets_leftmost_wins() {
        let m = Masker::new(["12345678", "5678abcd"], Vec::<String>::new());
        every_split(&m, b"-12345678abcd-", b"-[MASKED]abcd-");
        every_split(&m, b"-5678abcd-", b"-[MASKED]-");
        // A secret overlapping itself.
        let m = Masker::new(["aaaaaaaa"], Vec::<String>::new());
        every_split(&m, b"aaaaaaaaaaa", b"[MASKED]aaa");
    }

    #[test]
    fn token_prefixes() {
        let m = Masker::new(Vec::<String>::new(), DEFAULT_TOKEN_PREFIXES);
        every_split(&m, b"t=glpat-AbC_d.e=f-9 ok", b"t=glpat-[MASKED] ok");
        every_split(&m, b"glpat- bare", b"glpat- bare");
        every_split(&m, b"glglpat-xy", b"glglpat-[MASKED]");
        every_split(&m, b"GR1348941abc\n", b"GR1348941[MASKED]\n");
        every_split(&m, b"end glrt-zz", b"end glrt-[MASKED]");
    }

    #[test]
    fn secret_inside_bare_prefix_region() {
        let m = Masker::new(["pat-!abcdef"], ["glpat-"]);
        every_split(&m, b"glpat-!abcdef", b"gl[MASKED]");
    }

    #[test]
    fn long_token_across_many_chunks() {
        let m = Masker::new(Vec::<String>::new(), ["glpat-"]);
        let mut s = b"glpat-".to_vec();
        s.extend(std::iter::repeat_n(b'x', 5000));
        s.extend(b" after");
        let cuts: Vec<usize> = (0..s.len()).step_by(7).collect();
        assert_eq!(stream(&m, &s, &cuts), b"glpat-[MASKED] after");
    }

    #[test]
    fn holds_back_only_possible_starts() {
        let mut m = Masker::new(["secretvalue"], Vec::<String>::new());
        assert_eq!(m.write(b"hello world"), b"hello world");
        assert_eq!(m.write(b"hello sec"), b"hello ");
        assert_eq!(m.write(b"ond"), b"second");
        assert_eq!(m.finish(), b"");
    }

    #[test]
    fn maskable_rules() {
        assert!(is_maskable("abcdEFGH12+/=@:.~-_"));
        assert!(!is_maskable("short"));
        assert!(!is_maskable("has space 123"));
        assert!(!is_maskable("with|pipe123"));
    }

    #[test]
    fn job_values_include_url_encoded_forms() {
        let p = JobPayload {
            token: "glcbt-64_abcdefgh".into(),
            variables: vec![
                crate::payload::JobVariable {
                    key: "PASS".into(),
                    value: "p@ss:word/123".into(),
                    masked: true,
                    ..Default::default()
                },
                crate::payload::JobVariable {
                    key: "SHORT".into(),
                    value: "abc".into(),
                    masked: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let v = masked_values(&p);
        assert!(v.contains(&"p@ss:word/123".to_string()));
        assert!(v.contains(&"p%40ss%3Aword%2F123".to_string()));
        assert!(v.contains(&"glcbt-64_abcdefgh".to_string()));
        assert!(!v.iter().any(|s| s == "abc"));
        let m = Masker::for_job(&p);
        assert_eq!(
            m.mask_all(b"u=p%40ss%3Aword%2F123 p@ss:word/123"),
            b"u=[MASKED] [MASKED]"
        );
    }
}
