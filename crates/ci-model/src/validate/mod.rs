//! Validation of a merged configuration, with GitLab's messages.
//!
//! GitLab validates in two passes: every entry (`Gitlab::Ci::Config::Entry::*`) checks its
//! own shape and reports `"<key path> <attribute> <message>"` lowercased; then
//! `Gitlab::Ci::YamlProcessor` checks relations between jobs (stages, needs, dependencies,
//! environments) with verbatim messages. [`Checker`] collects both kinds with positions.
//! `entries.rs` holds the per-keyword entry checks, `pipeline.rs` the root, jobs and the
//! cross-job checks.

pub(crate) mod entries;

use crate::diag::Diagnostic;
use crate::yaml::{Mapping, Node, Span, Value};

/// Collects diagnostics while walking the configuration.
#[derive(Default)]
pub(crate) struct Checker {
    pub(crate) diags: Vec<Diagnostic>,
}

impl Checker {
    /// An entry error as GitLab's `Validator#messages` builds it: the key path (`loc`,
    /// segments joined with `:`), a space, the message; all lowercased.
    /// `msg` starts with the attribute, e.g. `config should be a hash`.
    pub(crate) fn entry(&mut self, loc: &str, span: Span, msg: impl AsRef<str>) {
        let text = if loc.is_empty() {
            msg.as_ref().to_lowercase()
        } else {
            format!("{loc} {}", msg.as_ref()).to_lowercase()
        };
        self.push_unique(Diagnostic::error(text, Some(span)));
    }

    /// A message taken verbatim (cross-job checks, include and extends errors).
    pub(crate) fn verbatim(&mut self, span: Option<Span>, msg: impl Into<String>) {
        self.push_unique(Diagnostic::error(msg, span));
    }

    /// A warning, verbatim.
    pub(crate) fn warn(&mut self, span: Option<Span>, msg: impl Into<String>) {
        self.push_unique(Diagnostic::warning(msg, span));
    }

    fn push_unique(&mut self, d: Diagnostic) {
        if !self
            .diags
            .iter()
            .any(|x| x.message == d.message && x.severity == d.severity)
        {
            self.diags.push(d);
        }
    }

    /// Whether any error was reported.
    #[allow(dead_code)] // for the pipeline pass (pipeline.rs), not yet on this branch
    pub(crate) fn has_errors(&self) -> bool {
        self.diags
            .iter()
            .any(|d| d.severity == crate::diag::Severity::Error)
    }
}

/// `parent:key`, or `key` at the root.
pub(crate) fn loc(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}:{key}")
    }
}

/// `validates :config, type: Hash` -> `config should be a hash`.
pub(crate) fn expect_map<'a>(ck: &mut Checker, loc: &str, node: &'a Node) -> Option<&'a Mapping> {
    match &node.value {
        Value::Map(m) => Some(m),
        _ => {
            ck.entry(loc, node.span, "config should be a hash");
            None
        }
    }
}

/// `validates :config, allowed_keys: KEYS` -> `config contains unknown keys: a, b`.
/// Returns true when all keys are allowed.
pub(crate) fn check_keys(ck: &mut Checker, loc: &str, node: &Node, map: &Mapping, allowed: &[&str]) -> bool {
    let unknown: Vec<&str> = map.keys().filter(|k| !allowed.contains(k)).collect();
    if unknown.is_empty() {
        return true;
    }
    let span = map.key_span(unknown[0]).unwrap_or(node.span);
    ck.entry(
        loc,
        span,
        format!("config contains unknown keys: {}", unknown.join(", ")),
    );
    false
}

/// The value of `key` in `map` unless it is missing or `null` (GitLab treats `nil` as
/// "not specified").
pub(crate) fn present<'a>(map: &'a Mapping, key: &str) -> Option<&'a Node> {
    map.get(key).filter(|n| !n.is_null())
}

/// A string (GitLab's `String` check; symbols count as strings).
pub(crate) fn is_string(n: &Node) -> bool {
    matches!(n.value, Value::Str(_))
}

/// `array_of_strings` validator.
pub(crate) fn is_array_of_strings(n: &Node) -> bool {
    n.as_seq().is_some_and(|s| s.iter().all(is_string))
}

/// `array_of_strings_or_string` validator.
pub(crate) fn is_array_of_strings_or_string(n: &Node) -> bool {
    is_string(n) || is_array_of_strings(n)
}

/// `boolean` validator.
pub(crate) fn is_bool(n: &Node) -> bool {
    matches!(n.value, Value::Bool(_))
}

/// A string or a nested array of strings up to `max_depth` levels (GitLab's
/// `Entry::Commands`/`string_or_nested_array_of_strings`).
pub(crate) fn is_nested_strings(n: &Node, max_depth: usize) -> bool {
    match &n.value {
        Value::Str(_) => true,
        Value::Seq(items) => max_depth > 0 && items.iter().all(|i| is_nested_strings(i, max_depth - 1)),
        _ => false,
    }
}

/// Parses a GitLab duration (`ChronicDuration`-like: `3h 30m`, `1 day`, `90`, `2w`,
/// `1h30m`, `1.5 hours`) into seconds. `None` when GitLab would say "should be a duration".
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
        return None;
    }
    if let Ok(n) = t.parse::<u64>() {
        return Some(n);
    }
    let mut total = 0f64;
    let mut rest = t.as_str();
    let mut any = false;
    while !rest.is_empty() {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() {
            break;
        }
        if let Some(r) = rest.strip_prefix("and ") {
            rest = r;
            continue;
        }
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let mult = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "wk" | "wks" | "week" | "weeks" => 604800.0,
            "mo" | "mos" | "month" | "months" => 2_592_000.0,
            "y" | "yr" | "yrs" | "year" | "years" => 31_557_600.0,
            _ => return None,
        };
        total += num * mult;
        any = true;
    }
    if !any || !total.is_finite() || total < 0.0 {
        return None;
    }
    Some(total.round() as u64)
}

/// Runs the entry check GitLab's root entry would run for one top-level `key` of a
/// configuration (a job, `default`, `workflow`, `variables`, `stages`, `include`, or a
/// deprecated global keyword) and returns what it reported. `spec` (the component header)
/// and hidden jobs (`.name`) are not entries and report nothing. For tests and tools that
/// check one keyword at a time (GitLab's schema fixtures are written that way).
pub fn validate_entry_fixture(key: &str, node: &Node) -> Vec<Diagnostic> {
    let mut ck = Checker::default();
    match key {
        "default" => entries::default(&mut ck, node),
        "workflow" => entries::workflow(&mut ck, node),
        "variables" => entries::variables(&mut ck, key, node, true),
        "stages" | "types" => entries::stages(&mut ck, key, node),
        "include" => entries::include(&mut ck, key, node),
        "before_script" | "after_script" => entries::commands(&mut ck, key, node),
        "image" => entries::image(&mut ck, key, node),
        "services" => entries::services(&mut ck, key, node),
        "cache" => entries::caches(&mut ck, key, node),
        "spec" => {}
        k if k.starts_with('.') => {}
        k => entries::job(&mut ck, &loc("jobs", k), k, node),
    }
    ck.diags
}

/// Whether a `rules:if` / `only:variables` expression is valid GitLab syntax. Returns the
/// problem when it is not.
pub(crate) fn expression_problem(src: &str) -> Option<String> {
    crate::expr::Expression::parse(src).err().map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3h 30m"), Some(12600));
        assert_eq!(parse_duration("1 day"), Some(86400));
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("2 weeks and 1 day"), Some(2 * 604800 + 86400));
        assert_eq!(parse_duration("never"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("1 fortnight"), None);
    }
}
