//! Building the merged configuration: `include:`, then `extends:`, then `!reference`.
//!
//! The order and the merge rules are GitLab's (`Gitlab::Ci::Config#build_config`):
//! the external processor merges each included file (its own includes expanded first) into
//! an empty hash in order, then the including file on top (`deep_merge!`: hashes merged
//! key by key, anything else replaced, existing keys keep their position); `Extendable`
//! then merges each job's bases; then `!reference` tags are resolved against the result.

use std::collections::HashSet;

use crate::diag::Diagnostic;
use crate::source::{FetchError, FileSource, component_name};
use crate::yaml::{self, Limits, LoadError, Mapping, Node, SourceMap, Span, Value};

/// GitLab's default maximum of included files per pipeline (`ci_max_includes`).
pub const MAX_INCLUDES: usize = 150;
/// `Extendable::Entry::MAX_NESTING_LEVELS`.
pub const MAX_EXTENDS_NESTING: usize = 10;
/// Maximum depth of nested `!reference` resolution.
pub const MAX_REFERENCE_DEPTH: usize = 10;

/// Options for composing a configuration.
#[derive(Clone, Debug, Default)]
pub struct ComposeOptions {
    /// Variables available to `include:` locations and `include:rules` (the pipeline's
    /// predefined and project variables).
    pub variables: Vec<(String, String)>,
    /// Maximum number of included files (defaults to [`MAX_INCLUDES`] when 0).
    pub max_includes: usize,
    /// YAML limits per file.
    pub limits: Option<Limits>,
}

/// The merged configuration and what went wrong while building it.
#[derive(Clone, Debug)]
pub struct Composed {
    /// The configuration after include, extends and `!reference` (a mapping).
    pub config: Node,
    /// The component `spec:` header of the main file, if any.
    pub header: Option<Node>,
    /// Names of all files that spans refer to (index 0 is the main file).
    pub sources: SourceMap,
    /// Errors; when not empty, `config` is as far as composition got.
    pub diagnostics: Vec<Diagnostic>,
    /// The files that were included, in the order they were read.
    pub included: Vec<String>,
}

/// A rule evaluator for `include:rules` (`if`/`exists`/`changes`). podci-model's
/// expression language plugs in here; `None` keeps every include.
pub type IncludeRuleEval<'a> = &'a dyn Fn(&Node, &[(String, String)], &dyn FileSource) -> bool;

/// Reads `main_src` (named `main_name`) and composes the full configuration.
pub fn compose(
    main_name: &str,
    main_src: &str,
    source: &dyn FileSource,
    options: &ComposeOptions,
    rule_eval: Option<IncludeRuleEval<'_>>,
) -> Composed {
    let mut sources = SourceMap::default();
    let file = sources.add(main_name);
    let limits = options.limits.unwrap_or_default();
    let mut st = State {
        source,
        options,
        rule_eval,
        sources,
        diags: Vec::new(),
        count: 0,
        included: Vec::new(),
        max: if options.max_includes == 0 {
            MAX_INCLUDES
        } else {
            options.max_includes
        },
        limits,
    };
    let empty = Node {
        value: Value::Map(Mapping::new()),
        span: Span {
            file,
            line: 1,
            col: 1,
        },
    };
    let (header, doc) = match yaml::load_config(main_src, file, limits) {
        Ok(v) => v,
        Err(e) => {
            let span = e.position().map(|(line, col)| Span { file, line, col });
            st.diags.push(Diagnostic::error(
                e.to_string(),
                span.or(Some(Span {
                    file,
                    line: 0,
                    col: 0,
                })),
            ));
            return st.finish(empty, None);
        }
    };
    let mut config = st.expand_includes(doc);
    if st.diags.is_empty() {
        apply_extends(&mut config, &mut st.diags);
    }
    if st.diags.is_empty() {
        resolve_references(&mut config, &mut st.diags);
    }
    st.finish(config, header)
}

struct State<'a> {
    source: &'a dyn FileSource,
    options: &'a ComposeOptions,
    rule_eval: Option<IncludeRuleEval<'a>>,
    sources: SourceMap,
    diags: Vec<Diagnostic>,
    count: usize,
    included: Vec<String>,
    max: usize,
    limits: Limits,
}

/// One include after normalization.
enum Target {
    Local(String),
    Remote(String),
    Project {
        project: String,
        reference: Option<String>,
        file: String,
    },
    Template(String),
    Component(String),
}

impl Target {
    fn location(&self) -> &str {
        match self {
            Target::Local(l) | Target::Remote(l) | Target::Template(l) | Target::Component(l) => l,
            Target::Project { file, .. } => file,
        }
    }
}

impl State<'_> {
    fn finish(self, config: Node, header: Option<Node>) -> Composed {
        Composed {
            config,
            header,
            sources: self.sources,
            diagnostics: self.diags,
            included: self.included,
        }
    }

    fn error(&mut self, span: Span, msg: String) {
        if !self.diags.iter().any(|d| d.message == msg) {
            self.diags.push(Diagnostic::error(msg, Some(span)));
        }
    }

    /// Processes the `include:` of `doc` (and, recursively, of included files) and returns
    /// the merged mapping without `include`.
    fn expand_includes(&mut self, doc: Node) -> Node {
        let span = doc.span;
        let Value::Map(mut map) = doc.value else {
            return doc;
        };
        let Some(include) = map.remove("include") else {
            return Node {
                value: Value::Map(map),
                span,
            };
        };
        let mut merged = Mapping::new();
        for (target, node) in self.normalize(&include) {
            for (name, content, file_span) in self.fetch(target, &node) {
                let file = self.sources.add(&name);
                let loaded = match yaml::load_config(&content, file, self.limits) {
                    Ok((_, d)) => d,
                    Err(LoadError::TooBig) => {
                        self.error(file_span, "The parsed YAML is too big".to_string());
                        continue;
                    }
                    Err(_) => {
                        self.error(
                            file_span,
                            format!("Included file `{name}` does not have valid YAML syntax!"),
                        );
                        continue;
                    }
                };
                if loaded.as_map().is_some_and(Mapping::is_empty) {
                    self.error(
                        file_span,
                        format!("Included file `{name}` does not have valid YAML syntax!"),
                    );
                    continue;
                }
                let expanded = self.expand_includes(loaded);
                if let Value::Map(m) = expanded.value {
                    deep_merge(&mut merged, m);
                }
            }
        }
        deep_merge(&mut merged, map);
        Node {
            value: Value::Map(merged),
            span,
        }
    }

    /// `Mapper::Normalizer` + `Filter` + `Matcher`: one target per include entry whose
    /// rules match.
    fn normalize(&mut self, include: &Node) -> Vec<(Target, Node)> {
        let items: Vec<Node> = match &include.value {
            Value::Seq(s) => s.clone(),
            Value::Null => Vec::new(),
            _ => vec![include.clone()],
        };
        let mut out = Vec::new();
        for item in items {
            match &item.value {
                Value::Str(s) => {
                    let s = self.expand_vars(s);
                    let t = if is_url(&s) {
                        Target::Remote(s)
                    } else {
                        Target::Local(s)
                    };
                    out.push((t, item));
                }
                Value::Map(m) => {
                    if let (Some(rules), Some(eval)) = (m.get("rules"), self.rule_eval)
                        && !eval(rules, &self.options.variables, self.source)
                    {
                        continue;
                    }
                    let accessors: Vec<&str> =
                        ["local", "remote", "project", "template", "component", "artifact"]
                            .into_iter()
                            .filter(|k| m.contains_key(k))
                            .collect();
                    if accessors.len() != 1 {
                        let json = serde_json::to_string(&item.to_json()).unwrap_or_default();
                        self.error(
                            item.span,
                            format!("Include `{json}` needs to match exactly one accessor!"),
                        );
                        continue;
                    }
                    let text = |k: &str| m.get(k).and_then(Node::scalar_to_string);
                    match accessors[0] {
                        "local" => {
                            if let Some(l) = text("local") {
                                out.push((Target::Local(self.expand_vars(&l)), item.clone()));
                            }
                        }
                        "remote" => {
                            if let Some(r) = text("remote") {
                                out.push((Target::Remote(self.expand_vars(&r)), item.clone()));
                            }
                        }
                        "template" => {
                            if let Some(t) = text("template") {
                                out.push((Target::Template(t), item.clone()));
                            }
                        }
                        "component" => {
                            if let Some(c) = text("component") {
                                out.push((Target::Component(self.expand_vars(&c)), item.clone()));
                            }
                        }
                        "project" => {
                            let project = self.expand_vars(&text("project").unwrap_or_default());
                            let reference = text("ref").map(|r| self.expand_vars(&r));
                            let files: Vec<String> = match m.get("file").map(|n| &n.value) {
                                Some(Value::Seq(s)) => s.iter().filter_map(Node::scalar_to_string).collect(),
                                Some(_) => text("file").into_iter().collect(),
                                None => Vec::new(),
                            };
                            for f in files {
                                out.push((
                                    Target::Project {
                                        project: project.clone(),
                                        reference: reference.clone(),
                                        file: self.expand_vars(&f),
                                    },
                                    item.clone(),
                                ));
                            }
                        }
                        // `artifact:` is only valid in child pipelines (trigger:include).
                        _ => {}
                    }
                }
                _ => {
                    let json = serde_json::to_string(&item.to_json()).unwrap_or_default();
                    self.error(
                        item.span,
                        format!("Include `{json}` needs to match exactly one accessor!"),
                    );
                }
            }
        }
        out
    }

    fn expand_vars(&self, s: &str) -> String {
        crate::expand::expand_existing(s, &self.options.variables)
    }

    /// Fetches one target: `(display name, content, span of the include)`.
    fn fetch(&mut self, target: Target, node: &Node) -> Vec<(String, String, Span)> {
        let span = node.span;
        let location = target.location().to_string();
        if !matches!(target, Target::Component(_)) && !has_yaml_extension(&location) {
            self.error(
                span,
                format!("Included file `{location}` does not have YAML extension!"),
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        match target {
            Target::Local(path) => {
                let path = path.trim_start_matches('/').to_string();
                let paths = if path.contains('*') {
                    match self.source.local_files() {
                        Ok(all) => {
                            let re = wildcard_regex(&path);
                            let mut m: Vec<String> = all.into_iter().filter(|f| re.is_match(f)).collect();
                            m.sort();
                            m
                        }
                        Err(e) => {
                            self.error(span, format!("Local file `{location}` could not be listed: {e}"));
                            return out;
                        }
                    }
                } else {
                    vec![path]
                };
                if paths.is_empty() {
                    self.error(span, format!("Local file `{location}` does not exist!"));
                }
                for p in paths {
                    if !self.count_include(span) {
                        break;
                    }
                    match self.source.local(&p) {
                        Ok(c) if c.trim().is_empty() => {
                            self.error(span, format!("Local file `{p}` is empty!"))
                        }
                        Ok(c) => {
                            self.included.push(p.clone());
                            out.push((p, c, span));
                        }
                        Err(FetchError::NotFound) => {
                            self.error(span, format!("Local file `{p}` does not exist!"))
                        }
                        Err(e) => self.error(span, format!("Local file `{p}` could not be read: {e}")),
                    }
                }
            }
            Target::Remote(url) => {
                if self.count_include(span) {
                    match self.source.remote(&url) {
                        Ok(c) if c.trim().is_empty() => {
                            self.error(span, format!("Included file `{url}` is empty or does not exist!"))
                        }
                        Ok(c) => {
                            self.included.push(url.clone());
                            out.push((url, c, span));
                        }
                        Err(FetchError::NotFound) => self.error(
                            span,
                            format!(
                                "Remote file `{url}` could not be fetched because of HTTP code `404` error!"
                            ),
                        ),
                        Err(e) => self.error(span, format!("Remote file `{url}` could not be fetched: {e}")),
                    }
                }
            }
            Target::Project {
                project,
                reference,
                file,
            } => {
                if self.count_include(span) {
                    match self.source.project(&project, reference.as_deref(), &file) {
                        Ok(c) => {
                            let name = format!("{project}/{}", file.trim_start_matches('/'));
                            self.included.push(name.clone());
                            out.push((name, c, span));
                        }
                        Err(FetchError::NotFound) => {
                            self.error(span, format!("Project `{project}` file `{file}` does not exist!"))
                        }
                        Err(e) => self.error(
                            span,
                            format!("Project `{project}` file `{file}` could not be fetched: {e}"),
                        ),
                    }
                }
            }
            Target::Template(name) => {
                if self.count_include(span) {
                    match self.source.template(&name) {
                        Ok(c) => {
                            self.included.push(name.clone());
                            out.push((name, c, span));
                        }
                        Err(FetchError::NotFound) => self.error(
                            span,
                            format!("Included file `{name}` is empty or does not exist!"),
                        ),
                        Err(e) => {
                            self.error(span, format!("Template file `{name}` could not be fetched: {e}"))
                        }
                    }
                }
            }
            Target::Component(address) => {
                if component_name(&address).is_none() {
                    self.error(span, format!("Component '{address}' - content not found"));
                } else if self.count_include(span) {
                    match self.source.component(&address) {
                        Ok(c) => {
                            self.included.push(address.clone());
                            out.push((address, c, span));
                        }
                        Err(FetchError::NotFound) => {
                            self.error(span, format!("Component '{address}' - content not found"))
                        }
                        Err(e) => self.error(span, format!("Component '{address}' - {e}")),
                    }
                }
            }
        }
        out
    }

    fn count_include(&mut self, span: Span) -> bool {
        self.count += 1;
        if self.count > self.max {
            self.error(
                span,
                format!("Maximum of {} nested includes are allowed!", self.max),
            );
            return false;
        }
        true
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn has_yaml_extension(location: &str) -> bool {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.ends_with(".yml") || path.ends_with(".yaml")
}

/// GitLab's wildcard include pattern: `**` matches across directories, `*` within one.
pub(crate) fn wildcard_regex(pattern: &str) -> regex::Regex {
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '*' {
            if chars.peek() == Some(&'*') {
                chars.next();
                re.push_str(".*");
            } else {
                re.push_str("[^/]*");
            }
        } else {
            re.push_str(&regex::escape(&c.to_string()));
        }
    }
    re.push('$');
    // The pattern is built from escaped literals and fixed fragments, so it always compiles;
    // fall back to a never-matching regex rather than panicking.
    regex::Regex::new(&re).unwrap_or_else(|_| regex::Regex::new("$^").unwrap_or_else(|_| unreachable!()))
}

/// ActiveSupport's `Hash#deep_merge!`: `over` wins; nested hashes are merged.
pub fn deep_merge(base: &mut Mapping, over: Mapping) {
    for (k, span, v) in over.into_entries() {
        match (base.get_mut(&k), v.value) {
            (Some(existing), Value::Map(om)) if matches!(existing.value, Value::Map(_)) => {
                if let Value::Map(bm) = &mut existing.value {
                    deep_merge(bm, om);
                }
            }
            (_, value) => base.insert(k, span, Node { value, span: v.span }),
        }
    }
}

/// `Gitlab::Ci::Config::Extendable`: applies `extends:` to every top-level hash.
fn apply_extends(config: &mut Node, diags: &mut Vec<Diagnostic>) {
    let Value::Map(root) = &mut config.value else {
        return;
    };
    let keys: Vec<String> = root.keys().map(str::to_string).collect();
    let mut done: HashSet<String> = HashSet::new();
    for key in keys {
        let mut ancestors = Vec::new();
        if let Err(d) = extend_entry(root, &key, &mut ancestors, &mut done) {
            diags.push(d);
            return;
        }
    }
}

fn extends_keys(node: &Node) -> Option<Vec<String>> {
    let m = node.as_map()?;
    let e = m.get("extends")?;
    Some(match &e.value {
        Value::Seq(items) => items.iter().filter_map(Node::scalar_to_string).collect(),
        Value::Null => Vec::new(),
        _ => e.scalar_to_string().into_iter().collect(),
    })
}

fn extend_entry(
    root: &mut Mapping,
    key: &str,
    ancestors: &mut Vec<String>,
    done: &mut HashSet<String>,
) -> Result<(), Diagnostic> {
    // GitLab re-walks the whole chain from every key (an extended entry keeps its
    // `extends:`), so the nesting depth counts from each job; `done` only skips re-merging.
    let Some(node) = root.get(key) else { return Ok(()) };
    let Some(bases) = extends_keys(node) else {
        done.insert(key.to_string());
        return Ok(());
    };
    let span = node
        .as_map()
        .and_then(|m| m.get("extends"))
        .map(|n| n.span)
        .unwrap_or(node.span);
    for base in &bases {
        if !root.contains_key(base) {
            return Err(Diagnostic::error(
                format!("{key}: unknown key in `extends`"),
                Some(span),
            ));
        }
        if root.get(base).and_then(Node::as_map).is_none() {
            return Err(Diagnostic::error(
                format!("{key}: invalid base hash in `extends`"),
                Some(span),
            ));
        }
    }
    if ancestors.len() > MAX_EXTENDS_NESTING {
        return Err(Diagnostic::error(
            format!("{key}: nesting too deep in `extends`"),
            Some(span),
        ));
    }
    if ancestors.iter().any(|a| a == key) {
        return Err(Diagnostic::error(
            format!("{key}: circular dependency detected in `extends`"),
            Some(span),
        ));
    }
    let mut merged = Mapping::new();
    ancestors.push(key.to_string());
    for base in &bases {
        extend_entry(root, base, ancestors, done)?;
        if done.contains(key) {
            continue;
        }
        if let Some(Value::Map(bm)) = root.get(base).map(|n| n.value.clone()) {
            deep_merge(&mut merged, bm);
        }
    }
    ancestors.pop();
    if done.contains(key) {
        return Ok(());
    }
    if let Some(n) = root.get_mut(key)
        && let Value::Map(own) = &mut n.value
    {
        deep_merge(&mut merged, std::mem::take(own));
        n.value = Value::Map(merged);
    }
    done.insert(key.to_string());
    Ok(())
}

/// Resolves every `!reference` in the configuration.
///
/// References are looked up in the configuration as it was before any was replaced, so the
/// replacements are computed first (reading only) and applied afterwards; this avoids
/// copying the whole configuration.
fn resolve_references(config: &mut Node, diags: &mut Vec<Diagnostic>) {
    let mut replacements: Vec<(Vec<usize>, Node)> = Vec::new();
    let mut chain = Vec::new();
    let mut path = Vec::new();
    if let Err(d) = collect_references(config, config, &mut path, &mut replacements, &mut chain) {
        diags.push(d);
        return;
    }
    for (at, value) in replacements {
        if let Some(slot) = node_at_mut(config, &at) {
            *slot = value;
        }
    }
}

fn collect_references(
    node: &Node,
    root: &Node,
    path: &mut Vec<usize>,
    out: &mut Vec<(Vec<usize>, Node)>,
    chain: &mut Vec<String>,
) -> Result<(), Diagnostic> {
    match &node.value {
        Value::Reference(p) => {
            out.push((path.clone(), resolve_reference(p, node.span, root, chain)?));
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i);
                collect_references(item, root, path, out, chain)?;
                path.pop();
            }
        }
        Value::Map(m) => {
            for (i, (_, v)) in m.iter().enumerate() {
                path.push(i);
                collect_references(v, root, path, out, chain)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn node_at_mut<'a>(mut node: &'a mut Node, path: &[usize]) -> Option<&'a mut Node> {
    for &i in path {
        node = match &mut node.value {
            Value::Seq(items) => items.get_mut(i)?,
            Value::Map(m) => m.value_at_mut(i)?,
            _ => return None,
        };
    }
    Some(node)
}

fn reference_text(path: &[Node]) -> String {
    let parts: Vec<String> = path
        .iter()
        .map(|p| match &p.value {
            Value::Str(s) => format!("{s:?}"),
            _ => p.to_json().to_string(),
        })
        .collect();
    format!("!reference [{}]", parts.join(", "))
}

fn resolve_in(node: &mut Node, root: &Node, chain: &mut Vec<String>) -> Result<(), Diagnostic> {
    match &mut node.value {
        Value::Reference(path) => {
            let path = path.clone();
            let resolved = resolve_reference(&path, node.span, root, chain)?;
            node.value = resolved.value;
            Ok(())
        }
        Value::Seq(items) => {
            for i in items.iter_mut() {
                resolve_in(i, root, chain)?;
            }
            Ok(())
        }
        Value::Map(m) => {
            for (_, v) in m.iter_mut() {
                resolve_in(v, root, chain)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn resolve_reference(
    path: &[Node],
    span: Span,
    root: &Node,
    chain: &mut Vec<String>,
) -> Result<Node, Diagnostic> {
    let text = reference_text(path);
    if path.is_empty() || !path.iter().all(|p| matches!(p.value, Value::Str(_))) {
        return Err(Diagnostic::error(format!("{text} is not valid"), Some(span)));
    }
    if chain.contains(&text) || chain.len() >= MAX_REFERENCE_DEPTH {
        return Err(Diagnostic::error(
            format!("{text} is part of a circular chain"),
            Some(span),
        ));
    }
    let mut cur = root;
    for p in path {
        let key = p.as_str().unwrap_or_default();
        match cur.as_map().and_then(|m| m.get(key)) {
            Some(n) if !n.is_null() => cur = n,
            _ => {
                return Err(Diagnostic::error(
                    format!("{text} could not be found"),
                    Some(span),
                ));
            }
        }
    }
    let mut value = cur.clone();
    chain.push(text);
    let r = resolve_in(&mut value, root, chain);
    chain.pop();
    r?;
    Ok(Node {
        value: value.value,
        span,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemorySource;

    fn run(main: &str, src: &dyn FileSource) -> Composed {
        compose(".gitlab-ci.yml", main, src, &ComposeOptions::default(), None)
    }

    fn messages(c: &Composed) -> Vec<String> {
        c.diagnostics.iter().map(|d| d.message.clone()).collect()
    }

    fn get<'a>(n: &'a Node, path: &[&str]) -> &'a Node {
        let mut cur = n;
        for p in path {
            cur = cur
                .as_map()
                .and_then(|m| m.get(p))
                .unwrap_or_else(|| panic!("no {p}"));
        }
        cur
    }

    #[test]
    fn include_order_main_file_wins() {
        let src = MemorySource::new()
            .with_file("a.yml", "variables: {A: a, B: a}\njob_a: {script: a}\n")
            .with_file("b.yml", "variables: {B: b, C: b}\n");
        let c = run(
            "include: [a.yml, /b.yml]\nvariables: {C: main}\njob: {script: x}\n",
            &src,
        );
        assert!(c.diagnostics.is_empty(), "{:?}", messages(&c));
        let vars = get(&c.config, &["variables"]).as_map().unwrap();
        assert_eq!(vars.get("A").unwrap().as_str(), Some("a"));
        assert_eq!(vars.get("B").unwrap().as_str(), Some("b"));
        assert_eq!(vars.get("C").unwrap().as_str(), Some("main"));
        let keys: Vec<&str> = c.config.as_map().unwrap().keys().collect();
        assert_eq!(keys, vec!["variables", "job_a", "job"]);
        assert_eq!(c.included, vec!["a.yml", "b.yml"]);
        // Spans point into the included file.
        let a_span = c.config.as_map().unwrap().key_span("job_a").unwrap();
        assert_eq!(c.sources.name(a_span.file), "a.yml");
    }

    #[test]
    fn nested_includes_and_globs() {
        let src = MemorySource::new()
            .with_file("ci/one.yml", "include: ci/deep/two.yml\none: {script: x}\n")
            .with_file("ci/deep/two.yml", "two: {script: x}\n")
            .with_file("ci/deep/three.yml", "three: {script: x}\n");
        let c = run("include: 'ci/*.yml'\n", &src);
        assert!(c.diagnostics.is_empty(), "{:?}", messages(&c));
        let keys: Vec<&str> = c.config.as_map().unwrap().keys().collect();
        assert_eq!(keys, vec!["two", "one"]);
        let c = run("include: 'ci/**.yml'\n", &src);
        let mut keys: Vec<&str> = c.config.as_map().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, vec!["one", "three", "two"]);
        let c = run("include: 'ci/**/*.yml'\n", &src);
        let mut keys: Vec<&str> = c.config.as_map().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, vec!["three", "two"]);
    }

    #[test]
    fn include_errors() {
        let src = MemorySource::new()
            .with_file("empty.yml", "  \n")
            .with_file("bad.yml", "a: [\n");
        let c = run("include: invalid\n", &src);
        assert_eq!(
            messages(&c),
            vec!["Included file `invalid` does not have YAML extension!"]
        );
        let c = run("include: missing.yml\n", &src);
        assert_eq!(messages(&c), vec!["Local file `missing.yml` does not exist!"]);
        assert_eq!(c.diagnostics[0].span.map(|s| (s.line, s.col)), Some((1, 10)));
        let c = run("include: empty.yml\n", &src);
        assert_eq!(messages(&c), vec!["Local file `empty.yml` is empty!"]);
        let c = run("include: bad.yml\n", &src);
        assert_eq!(
            messages(&c),
            vec!["Included file `bad.yml` does not have valid YAML syntax!"]
        );
        let c = run("include:\n  remote: http://url\n  local: /local/file.yml\n", &src);
        assert_eq!(
            messages(&c),
            vec![
                r#"Include `{"remote":"http://url","local":"/local/file.yml"}` needs to match exactly one accessor!"#
            ]
        );
    }

    #[test]
    fn include_limit() {
        let mut src = MemorySource::new();
        for i in 0..200 {
            src = src.with_file(
                &format!("f{i}.yml"),
                &format!("include: f{}.yml\nj{i}: {{script: x}}\n", i + 1),
            );
        }
        let c = run("include: f0.yml\n", &src);
        assert!(
            messages(&c).contains(&"Maximum of 150 nested includes are allowed!".to_string()),
            "{:?}",
            messages(&c)
        );
    }

    #[test]
    fn offline_forms_say_which_option_maps_them() {
        let c = run(
            "include:\n  project: grp/tpl\n  file: ci.yml\n",
            &crate::source::NoFiles,
        );
        assert_eq!(c.diagnostics.len(), 1);
        assert!(
            c.diagnostics[0].message.contains("--project grp/tpl=DIR"),
            "{}",
            c.diagnostics[0].message
        );
        let c = run(
            "include:\n  component: gitlab.com/grp/comps/build@1.0\n",
            &crate::source::NoFiles,
        );
        assert!(
            c.diagnostics[0]
                .message
                .contains("--component gitlab.com/grp/comps=DIR"),
            "{}",
            c.diagnostics[0].message
        );
    }

    #[test]
    fn extends_deep_merge() {
        let c = run(
            ".base:\n  image: ruby\n  variables: {A: '1', B: '2'}\n  script: [base]\n  tags: [x]\n.mid:\n  extends: .base\n  variables: {B: mid}\n  tags: null\njob:\n  extends: .mid\n  script: [job]\n",
            &MemorySource::new(),
        );
        assert!(c.diagnostics.is_empty(), "{:?}", messages(&c));
        let job = get(&c.config, &["job"]).as_map().unwrap();
        assert_eq!(job.get("image").unwrap().as_str(), Some("ruby"));
        let vars = job.get("variables").unwrap().as_map().unwrap();
        assert_eq!(vars.get("A").unwrap().as_str(), Some("1"));
        assert_eq!(vars.get("B").unwrap().as_str(), Some("mid"));
        assert_eq!(
            job.get("script").unwrap().as_seq().unwrap()[0].as_str(),
            Some("job")
        );
        assert!(job.get("tags").unwrap().is_null());
    }

    #[test]
    fn extends_multiple_bases_later_wins() {
        let c = run(
            ".a: {script: a, stage: sa}\n.b: {script: b}\njob: {extends: [.a, .b]}\n",
            &MemorySource::new(),
        );
        let job = get(&c.config, &["job"]).as_map().unwrap();
        assert_eq!(job.get("script").unwrap().as_str(), Some("b"));
        assert_eq!(job.get("stage").unwrap().as_str(), Some("sa"));
    }

    #[test]
    fn extends_errors() {
        let m = |y: &str| messages(&run(y, &MemorySource::new()));
        assert_eq!(
            m("job: {extends: .nope, script: x}\n"),
            vec!["job: unknown key in `extends`"]
        );
        assert_eq!(
            m(".b: [1]\njob: {extends: .b, script: x}\n"),
            vec!["job: invalid base hash in `extends`"]
        );
        assert_eq!(
            m(".a: {extends: .b}\n.b: {extends: .a}\njob: {extends: .a, script: x}\n"),
            vec![".a: circular dependency detected in `extends`"]
        );
        let mut deep = String::from(".l0: {script: x}\n");
        for i in 1..=11 {
            deep.push_str(&format!(".l{i}: {{extends: .l{}}}\n", i - 1));
        }
        assert!(m(&deep).is_empty(), "11 levels are allowed");
        deep.push_str(".l12: {extends: .l11}\n");
        // GitLab raises from the entry where the walk from `.l12` got too deep.
        assert_eq!(m(&deep), vec![".l1: nesting too deep in `extends`"]);
    }

    #[test]
    fn references() {
        let c = run(
            ".setup:\n  script: [a, b]\n  vars: {X: '1'}\njob:\n  script:\n    - !reference [.setup, script]\n    - c\n  variables: !reference [.setup, vars]\n",
            &MemorySource::new(),
        );
        assert!(c.diagnostics.is_empty(), "{:?}", messages(&c));
        let script = get(&c.config, &["job", "script"]).as_seq().unwrap();
        assert_eq!(script[0].as_seq().unwrap().len(), 2);
        assert_eq!(get(&c.config, &["job", "variables", "X"]).as_str(), Some("1"));
    }

    #[test]
    fn reference_after_extends() {
        let c = run(
            ".base: {script: [from_base]}\n.ext: {extends: .base}\njob: {script: !reference [.ext, script]}\n",
            &MemorySource::new(),
        );
        assert!(c.diagnostics.is_empty(), "{:?}", messages(&c));
        assert_eq!(
            get(&c.config, &["job", "script"]).as_seq().unwrap()[0].as_str(),
            Some("from_base")
        );
    }

    #[test]
    fn reference_errors() {
        let m = |y: &str| messages(&run(y, &MemorySource::new()));
        assert_eq!(
            m("job: {script: !reference [.x, script]}\n"),
            vec![r#"!reference [".x", "script"] could not be found"#]
        );
        assert_eq!(
            m(
                "job-1:\n  script: [!reference [job-2, script]]\njob-2:\n  script: [!reference [job-1, script]]\n"
            ),
            vec![r#"!reference ["job-2", "script"] is part of a circular chain"#]
        );
    }

    #[test]
    fn include_rules_if_and_exists() {
        let src = MemorySource::new()
            .with_file("a.yml", "a: {script: x}\n")
            .with_file("b.yml", "b: {script: x}\n")
            .with_file("c.yml", "c: {script: x}\n")
            .with_file("Dockerfile", "FROM scratch\n");
        let opts = ComposeOptions {
            variables: vec![
                ("CI_COMMIT_BRANCH".into(), "main".into()),
                ("FILE".into(), "c.yml".into()),
            ],
            ..ComposeOptions::default()
        };
        let main = "include:\n  - local: a.yml\n    rules:\n      - if: $CI_COMMIT_BRANCH == \"main\"\n  - local: b.yml\n    rules:\n      - if: $CI_COMMIT_BRANCH == \"dev\"\n      - exists: [Docker*]\n        when: never\n  - local: $FILE\n    rules:\n      - exists: [Dockerfile]\n";
        let eval: IncludeRuleEval<'_> = &crate::rules::include_rules_match;
        let c = compose(".gitlab-ci.yml", main, &src, &opts, Some(eval));
        assert!(c.diagnostics.is_empty(), "{:?}", messages(&c));
        let keys: Vec<&str> = c.config.as_map().unwrap().keys().collect();
        assert_eq!(keys, vec!["a", "c"]);
    }

    fn first_pos(y: &str) -> (String, u32, u32) {
        let c = run(y, &MemorySource::new());
        let d = c
            .diagnostics
            .first()
            .unwrap_or_else(|| panic!("no error for {y}"));
        let s = d.span.unwrap_or_default();
        (d.message.clone(), s.line, s.col)
    }

    #[test]
    fn positions_of_composition_errors() {
        assert_eq!(
            first_pos("job:\n  script: x\n  extends: .nope\n"),
            ("job: unknown key in `extends`".into(), 3, 12)
        );
        assert_eq!(
            first_pos("job:\n  script:\n    - !reference [.x, script]\n"),
            (r#"!reference [".x", "script"] could not be found"#.into(), 3, 7)
        );
        assert_eq!(
            first_pos("include:\n  - local: nope.yml\n"),
            ("Local file `nope.yml` does not exist!".into(), 2, 5)
        );
        assert_eq!(first_pos("a: [1\n").1, 2);
    }
}
