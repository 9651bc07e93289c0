//! Variable expansion, as GitLab does it on the server and as GitLab Runner does it.
//!
//! Server side (`ExpandVariables` in GitLab): `$VAR`, `${VAR}` and `%VAR%`; `$$` and `%%`
//! are left alone; [`expand_existing`] keeps unknown references, [`expand_server`] drops
//! them. Runner side (GitLab Runner's `JobVariables.ExpandValue`, Go's `os.Expand`): `$VAR`
//! and `${VAR}`, unknown ones become empty, `$$` becomes `$`; it is what the runner applies
//! to `image`, `services`, `cache` and `artifacts` values. [`expand_all`] resolves references
//! between variables the way the runner prepares a job's environment (raw and
//! `expand: false` variables stay literal).

use crate::eval::Variable;

/// A name lookup over `(name, value)` pairs (later ones win).
fn lookup<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// GitLab's `Gitlab::Regex.variable_regex` walk: calls `f(name)` for each reference and
/// keeps `$$`/`%%` and anything unmatched as written.
pub(crate) fn server_walk(s: &str, mut f: impl FnMut(&str) -> Option<String>) -> String {
    if !s.contains('$') && !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if (c == b'$' || c == b'%') && i + 1 < b.len() && b[i + 1] == c {
            out.push_str(&s[i..i + 2]);
            i += 2;
            continue;
        }
        if c == b'$' {
            if i + 1 < b.len() && b[i + 1] == b'{' {
                if let Some(end) = s[i + 2..].find('}') {
                    let name = &s[i + 2..i + 2 + end];
                    if name.bytes().all(is_name_char) {
                        let whole = &s[i..i + 3 + end];
                        out.push_str(&f(name).unwrap_or_else(|| whole.to_string()));
                        i += 3 + end;
                        continue;
                    }
                }
            } else {
                let mut j = i + 1;
                while j < b.len() && is_name_char(b[j]) {
                    j += 1;
                }
                if j > i + 1 {
                    let name = &s[i + 1..j];
                    out.push_str(&f(name).unwrap_or_else(|| s[i..j].to_string()));
                    i = j;
                    continue;
                }
            }
        } else if c == b'%' {
            let mut j = i + 1;
            while j < b.len() && is_name_char(b[j]) {
                j += 1;
            }
            if j > i + 1 && j < b.len() && b[j] == b'%' {
                let name = &s[i + 1..j];
                out.push_str(&f(name).unwrap_or_else(|| s[i..=j].to_string()));
                i = j + 1;
                continue;
            }
        }
        let len = s[i..].chars().next().map(char::len_utf8).unwrap_or(1);
        out.push_str(&s[i..i + len]);
        i += len;
    }
    out
}

/// The names `s` refers to, in order (`Item#depends_on`: `$NAME`, `${NAME}`, `%NAME%`;
/// `$$` and `%%` are not references).
pub(crate) fn references(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    server_walk(s, |name| {
        out.push(name.to_string());
        None
    });
    out
}

/// `ExpandVariables.expand_existing`: known references replaced, unknown ones kept.
pub fn expand_existing(s: &str, vars: &[(String, String)]) -> String {
    server_walk(s, |name| lookup(vars, name).map(str::to_string))
}

/// `ExpandVariables.expand`: known references replaced, unknown ones removed.
pub fn expand_server(s: &str, vars: &[(String, String)]) -> String {
    server_walk(s, |name| Some(lookup(vars, name).unwrap_or("").to_string()))
}

/// GitLab Runner's `Variables.value` as `os.Expand` asks it: `$$` is `$`, the shell's
/// special parameters (`$1`, `$*`, `$?`, ...) are empty, anything else is the variable's
/// last definition or empty.
fn runner_value<'a>(vars: &'a [(String, String)], name: &str) -> &'a str {
    match name {
        "$" => "$",
        "*" | "#" | "@" | "!" | "?" | "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" => "",
        _ => lookup(vars, name).unwrap_or(""),
    }
}

/// Go's `isShellSpecialVar`: a one-character name after `$`.
fn is_shell_special(b: u8) -> bool {
    matches!(b, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || b.is_ascii_digit()
}

/// GitLab Runner's expansion (`Variables.ExpandValue`, Go's `os.Expand`): `$VAR`,
/// `${VAR}`, `$$` -> `$`, `$1`/`$?`/... -> empty, unknown -> empty, a `${` without `}`
/// dropped, a `$` before anything else kept.
pub fn expand_runner(s: &str, vars: &[(String, String)]) -> String {
    if !s.contains('$') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' || i + 1 >= b.len() {
            let len = s[i..].chars().next().map(char::len_utf8).unwrap_or(1);
            out.push_str(&s[i..i + len]);
            i += len;
            continue;
        }
        let next = b[i + 1];
        if next == b'{' {
            match s[i + 2..].find('}') {
                Some(end) => {
                    out.push_str(runner_value(vars, &s[i + 2..i + 2 + end]));
                    i += 3 + end;
                }
                None => {
                    // os.Expand drops a bad `${` reference.
                    i += 2;
                }
            }
        } else if is_shell_special(next) {
            out.push_str(runner_value(vars, &s[i + 1..i + 2]));
            i += 2;
        } else if is_name_char(next) {
            let mut j = i + 1;
            while j < b.len() && is_name_char(b[j]) {
                j += 1;
            }
            out.push_str(lookup(vars, &s[i + 1..j]).unwrap_or(""));
            i = j;
        } else {
            out.push('$');
            i += 1;
        }
    }
    out
}

/// Resolves references between a job's variables as GitLab Runner does before a job
/// starts: each non-raw value is expanded against the variables (later definitions win);
/// chains resolve because values are expanded in order and repeatedly up to a small bound,
/// and a self-reference stays empty instead of looping.
pub fn expand_all(vars: &[Variable]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = vars.iter().map(|v| (v.key.clone(), v.value.clone())).collect();
    for _ in 0..4 {
        let snapshot = pairs.clone();
        let mut changed = false;
        for (i, v) in vars.iter().enumerate() {
            if v.raw || v.file || !pairs[i].1.contains('$') {
                continue;
            }
            let others: Vec<(String, String)> =
                snapshot.iter().filter(|(k, _)| *k != v.key).cloned().collect();
            let next = expand_runner(&v.value, &others);
            if next != pairs[i].1 {
                pairs[i].1 = next;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Variable, VariableLevel};

    fn v(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn server_side() {
        let vars = v(&[("A", "x"), ("B", "y")]);
        assert_eq!(
            expand_existing("$A-${B}-%A%-$C-${C}-%C%", &vars),
            "x-y-x-$C-${C}-%C%"
        );
        assert_eq!(expand_server("$A-$C-${C}", &vars), "x--");
        assert_eq!(expand_existing("$$A %%A%% 100%", &vars), "$$A %%A%% 100%");
        assert_eq!(expand_existing("ünï $A", &vars), "ünï x");
    }

    #[test]
    fn runner_side() {
        let vars = v(&[("A", "x"), ("B", "y")]);
        assert_eq!(expand_runner("$A/${B}/$C/$$A/$", &vars), "x/y//$A/$");
        assert_eq!(expand_runner("registry/${A}:$B", &vars), "registry/x:y");
        // os.Expand's shell specials: one character, empty (but `$$`).
        assert_eq!(expand_runner("$1abc|$?|$*x|${#}|${$}|$-", &vars), "abc||x||$|");
        // Bad syntax: `${` without `}` is dropped, `${}` too; `$` before other text stays.
        assert_eq!(expand_runner("x${A", &vars), "xA");
        assert_eq!(expand_runner("${}|$/|$ |50$", &vars), "|$/|$ |50$");
        // The name runs to the first `}`, whatever it holds.
        assert_eq!(expand_runner("a${A|${}b", &vars), "ab");
        assert_eq!(expand_runner("${A B}", &v(&[("A B", "z")])), "z");
    }

    #[test]
    fn chains_raw_and_self_reference() {
        let mk = |k: &str, val: &str, raw: bool| {
            let mut x = Variable::plain(k, val, VariableLevel::Job);
            x.raw = raw;
            x
        };
        let out = expand_all(&[
            mk("A", "a", false),
            mk("B", "$A-b", false),
            mk("C", "$B-c", false),
            mk("R", "$A", true),
            mk("S", "$S!", false),
        ]);
        let get = |k: &str| out.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("C"), Some("a-b-c"));
        assert_eq!(get("R"), Some("$A"));
        assert_eq!(get("S"), Some("!"));
    }
}
