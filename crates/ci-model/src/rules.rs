//! Rules evaluation shared by `include:rules`, `workflow:rules` and job `rules`.

use crate::compose::wildcard_regex;
use crate::source::FileSource;
use crate::yaml::{Node, Value};

/// Whether one rule's `if` holds for `vars` (missing `if` holds).
pub(crate) fn if_matches(rule: &crate::yaml::Mapping, vars: &[(String, String)]) -> bool {
    let Some(cond) = rule.get("if").and_then(Node::as_str) else {
        return true;
    };
    crate::expr_eval(cond, vars)
}

/// Whether one rule's `exists` holds (any listed path or glob exists in the project).
pub(crate) fn exists_matches(rule: &crate::yaml::Mapping, source: &dyn FileSource) -> bool {
    let Some(ex) = rule.get("exists") else { return true };
    let patterns: Vec<String> = match &ex.value {
        Value::Seq(s) => s.iter().filter_map(Node::scalar_to_string).collect(),
        Value::Map(m) => match m.get("paths").map(|n| &n.value) {
            Some(Value::Seq(s)) => s.iter().filter_map(Node::scalar_to_string).collect(),
            _ => Vec::new(),
        },
        _ => ex.scalar_to_string().into_iter().collect(),
    };
    let Ok(files) = source.local_files() else {
        return false;
    };
    patterns.iter().any(|p| {
        let p = p.trim_start_matches('/');
        if p.contains('*') {
            let re = wildcard_regex(p);
            files.iter().any(|f| re.is_match(f))
        } else {
            files.iter().any(|f| f == p)
        }
    })
}

/// `include:rules`: the include is used when the first matching rule is not `when: never`
/// (GitLab's `Mapper::Filter`; `changes` always holds when composing, as GitLab does for
/// pipelines without a push diff).
pub(crate) fn include_rules_match(rules: &Node, vars: &[(String, String)], source: &dyn FileSource) -> bool {
    let Some(list) = rules.as_seq() else { return true };
    for rule in list {
        let Some(m) = rule.as_map() else { continue };
        if if_matches(m, vars) && exists_matches(m, source) {
            return m.get("when").and_then(Node::as_str) != Some("never");
        }
    }
    false
}

/// Variables as `(name, value)` pairs, later pairs overriding earlier ones.
pub(crate) struct PairVars<'a>(pub(crate) &'a [(String, String)]);

impl crate::expr::Variables for PairVars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
