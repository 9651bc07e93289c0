//! Entry checks for every keyword, mirroring `Gitlab::Ci::Config::Entry::*`.
//!
//! Each function validates one entry's shape at `loc` (the entry's key path) and reports
//! through [`Checker::entry`] with GitLab's message text. GitLab builds a message as
//! `"<location> <Attribute humanized> <message>"` and lowercases it, so messages here start
//! with the humanized attribute (`start in`, `allow failure`, `config`, ...).
//!
//! Sources (gitlabhq/gitlabhq): `lib/gitlab/ci/config/entry/*.rb` and subfolders,
//! `ee/lib/ee/gitlab/ci/config/entry/*.rb` for the EE keys, and the generic validators in
//! `lib/gitlab/config/entry/validators.rb`. Each group below names its file.
//!
//! Not here (owned by the pipeline pass): include fetching, `extends`, `!reference`, the
//! root and `jobs` collections, `default:` inheritance and checks across jobs.

use super::{
    Checker, check_keys, expect_map, expression_problem, is_array_of_strings, is_array_of_strings_or_string,
    is_bool, is_nested_strings, is_string, parse_duration, present,
};
use crate::yaml::{Mapping, Node, Value};

// ---------------------------------------------------------------------------------------
// Small shared helpers (generic validators: lib/gitlab/config/entry/validators.rb)
// ---------------------------------------------------------------------------------------

/// `parent:key`.
fn at(parent: &str, key: &str) -> String {
    super::loc(parent, key)
}

/// Ruby's `blank?` as ActiveModel's presence validator sees it.
fn blank(n: &Node) -> bool {
    match &n.value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Str(s) => s.trim().is_empty(),
        Value::Seq(s) => s.is_empty(),
        Value::Map(m) => m.is_empty(),
        _ => false,
    }
}

/// Whether `key` is present with a non-blank value.
fn blank_key(map: &Mapping, key: &str) -> bool {
    map.get(key).is_none_or(blank)
}

/// Ruby's `to_s` / `inspect` as used by `"unknown value: #{value}"`.
fn ruby_s(n: &Node) -> String {
    match &n.value {
        Value::Seq(items) | Value::Reference(items) => {
            let inner: Vec<String> = items.iter().map(ruby_inspect).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Map(_) => ruby_inspect(n),
        _ => n.scalar_to_string().unwrap_or_default(),
    }
}

fn ruby_inspect(n: &Node) -> String {
    match &n.value {
        Value::Null => "nil".into(),
        Value::Str(s) => format!("{s:?}"),
        Value::Map(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}: {}", ruby_inspect(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        _ => ruby_s(n),
    }
}

/// A Ruby `Integer` (YAML ints).
fn is_int(n: &Node) -> bool {
    matches!(n.value, Value::Int(_))
}

/// `AlphanumericValidator`: String, Symbol or Integer.
fn is_alnum(n: &Node) -> bool {
    matches!(n.value, Value::Str(_) | Value::Int(_))
}

/// Numericality with `only_integer` and a range, as ActiveModel words it.
fn numericality(ck: &mut Checker, loc: &str, attr: &str, n: &Node, min: i64, max: i64) {
    match &n.value {
        Value::Int(i) => {
            if *i < min {
                ck.entry(
                    loc,
                    n.span,
                    format!("{attr} must be greater than or equal to {min}"),
                );
            } else if *i > max {
                ck.entry(loc, n.span, format!("{attr} must be less than or equal to {max}"));
            }
        }
        Value::Float(f) if f.fract() != 0.0 || !f.is_finite() => {
            ck.entry(loc, n.span, format!("{attr} must be an integer"))
        }
        Value::Float(f) => {
            let i = *f as i64;
            if i < min {
                ck.entry(
                    loc,
                    n.span,
                    format!("{attr} must be greater than or equal to {min}"),
                );
            } else if i > max {
                ck.entry(loc, n.span, format!("{attr} must be less than or equal to {max}"));
            }
        }
        Value::Str(s) if s.trim().parse::<i64>().is_ok() => {
            let i: i64 = s.trim().parse().unwrap_or_default();
            if i < min {
                ck.entry(
                    loc,
                    n.span,
                    format!("{attr} must be greater than or equal to {min}"),
                );
            } else if i > max {
                ck.entry(loc, n.span, format!("{attr} must be less than or equal to {max}"));
            }
        }
        Value::Str(s) if s.trim().parse::<f64>().is_ok() => {
            ck.entry(loc, n.span, format!("{attr} must be an integer"))
        }
        _ => ck.entry(loc, n.span, format!("{attr} is not a number")),
    }
}

/// `validates :attr, type: String` -> `<attr> should be a string`.
fn type_string(ck: &mut Checker, loc: &str, map: &Mapping, key: &str, attr: &str) -> bool {
    if let Some(n) = present(map, key)
        && !is_string(n)
    {
        ck.entry(loc, n.span, format!("{attr} should be a string"));
        return false;
    }
    true
}

/// `validates :attr, boolean: true` (allow nil).
fn boolean(ck: &mut Checker, loc: &str, map: &Mapping, key: &str, attr: &str) {
    if let Some(n) = present(map, key)
        && !is_bool(n)
    {
        ck.entry(loc, n.span, format!("{attr} should be a boolean value"));
    }
}

/// `validates :attr, array_of_strings: true` (allow nil).
fn array_of_strings(ck: &mut Checker, loc: &str, map: &Mapping, key: &str, attr: &str) -> bool {
    if let Some(n) = present(map, key)
        && !is_array_of_strings(n)
    {
        ck.entry(loc, n.span, format!("{attr} should be an array of strings"));
        return false;
    }
    true
}

/// `validates :attr, array_of_strings_or_string: true` (allow nil).
fn array_of_strings_or_string(ck: &mut Checker, loc: &str, map: &Mapping, key: &str, attr: &str) {
    if let Some(n) = present(map, key)
        && !is_array_of_strings_or_string(n)
    {
        ck.entry(
            loc,
            n.span,
            format!("{attr} should be an array of strings or a string"),
        );
    }
}

/// `validates :attr, presence: true`.
fn presence(ck: &mut Checker, loc: &str, node: &Node, map: &Mapping, key: &str, attr: &str) -> bool {
    if blank_key(map, key) {
        // Point at a blank value, at the key of a null one, at the entry when it is missing.
        let span = match map.get(key) {
            Some(v) if !v.is_null() => v.span,
            Some(_) => map.key_span(key).unwrap_or(node.span),
            None => node.span,
        };
        ck.entry(loc, span, format!("{attr} can't be blank"));
        return false;
    }
    true
}

/// `validates :attr, type: String, presence: true`: on a missing or blank value both
/// messages are reported, as ActiveModel runs both validators.
fn presence_and_string(ck: &mut Checker, loc: &str, node: &Node, map: &Mapping, key: &str, attr: &str) {
    presence(ck, loc, node, map, key, attr);
    if !map.get(key).is_some_and(is_string) {
        let span = match map.get(key) {
            Some(v) if !v.is_null() => v.span,
            Some(_) => map.key_span(key).unwrap_or(node.span),
            None => node.span,
        };
        ck.entry(loc, span, format!("{attr} should be a string"));
    }
}

/// `MutuallyExclusiveKeysValidator`.
fn mutually_exclusive(ck: &mut Checker, loc: &str, node: &Node, map: &Mapping, keys: &[&str]) {
    // `config.keys & keys`: in the configuration's order.
    let found: Vec<&str> = map.keys().filter(|k| keys.contains(k)).collect();
    if found.len() > 1 {
        let span = map.key_span(found[1]).unwrap_or(node.span);
        ck.entry(
            loc,
            span,
            format!("config these keys cannot be used together: {}", found.join(", ")),
        );
    }
}

/// `RequiredKeysValidator`.
fn required_keys(ck: &mut Checker, loc: &str, node: &Node, map: &Mapping, keys: &[&str]) {
    let missing: Vec<&str> = keys.iter().copied().filter(|k| !map.contains_key(k)).collect();
    if !missing.is_empty() {
        ck.entry(
            loc,
            node.span,
            format!("config missing required keys: {}", missing.join(", ")),
        );
    }
}

/// `DurationValidator` (with the optional `limit`, in seconds). `never` is accepted where
/// GitLab uses `Gitlab::Ci::Build::DurationParser` (`allow_never`).
fn duration(ck: &mut Checker, loc: &str, attr: &str, n: &Node, limit: Option<u64>, allow_never: bool) {
    // `validate_duration` accepts only strings (`expire_in: 1` is "should be a duration").
    let text = match &n.value {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    };
    let parsed = text.as_deref().and_then(|t| {
        if allow_never && t.trim().eq_ignore_ascii_case("never") {
            Some(0)
        } else {
            parse_duration(t)
        }
    });
    match parsed {
        None => {
            ck.entry(loc, n.span, format!("{attr} should be a duration"));
            if limit.is_some() {
                ck.entry(loc, n.span, format!("{attr} should not exceed the limit"));
            }
        }
        Some(secs) => {
            // `parsed_value.second.from_now < parsed_limit.second.from_now`: equal to the
            // limit is already too long.
            if let Some(l) = limit
                && secs >= l
            {
                ck.entry(loc, n.span, format!("{attr} should not exceed the limit"));
            }
        }
    }
}

const WEEK: u64 = 7 * 86_400;
/// `ChronicDuration.output(Project::MAX_BUILD_TIMEOUT)`: Rails' `1.month` (2,629,746 s),
/// printed and parsed back by ChronicDuration, is the same number of seconds.
const MONTH: u64 = 2_629_746;

/// Re2-syntax regexp in `/.../flags` form (`Gitlab::UntrustedRegexp::RubySyntax`).
fn is_re2_regexp(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('/') else {
        return false;
    };
    let Some(end) = rest.rfind('/') else {
        return false;
    };
    let (body, flags) = (&rest[..end], &rest[end + 1..]);
    if !flags.chars().all(|c| "ismU".contains(c)) {
        return false;
    }
    regex::Regex::new(body).is_ok()
}

fn looks_like_regexp(s: &str) -> bool {
    s.len() >= 2 && s.starts_with('/') && s[1..].contains('/')
}

fn is_array_of_strings_or_regexps(n: &Node) -> bool {
    n.as_seq().is_some_and(|items| {
        items.iter().all(|i| match i.as_str() {
            Some(s) if looks_like_regexp(s) => is_re2_regexp(s),
            Some(_) => true,
            None => false,
        })
    })
}

// ---------------------------------------------------------------------------------------
// Jobs: Entry::Job, Entry::Bridge, Entry::Processable (+ EE::Gitlab::Ci::Config::Entry::Job)
// Sources: lib/gitlab/ci/config/entry/job.rb, bridge.rb, processable.rb, jobs.rb (unmatched-job message),
// allow_failure.rb, commands.rb, stage.rb, tags.rb, timeout.rb, coverage.rb, hooks.rb, retry.rb,
// product/parallel.rb, product/matrix.rb, product/variables.rb; ee/lib/ee/gitlab/ci/config/entry/job.rb;
// lib/gitlab/ci/pipeline/seed/build.rb (needs limit).
// ---------------------------------------------------------------------------------------

/// `Entry::Job::ALLOWED_KEYS` + `EE::...::Job::EE_ALLOWED_KEYS` + `PROCESSABLE_ALLOWED_KEYS`.
const JOB_KEYS: &[&str] = &[
    "tags",
    "script",
    "image",
    "services",
    "start_in",
    "artifacts",
    "cache",
    "dependencies",
    "before_script",
    "after_script",
    "hooks",
    "coverage",
    "retry",
    "parallel",
    "timeout",
    "release",
    "id_tokens",
    "publish",
    "pages",
    "manual_confirmation",
    "run",
    "dast_configuration",
    "identity",
    "secrets",
    "extends",
    "stage",
    "only",
    "except",
    "rules",
    "variables",
    "inherit",
    "allow_failure",
    "when",
    "needs",
    "resource_group",
    "environment",
    "interruptible",
];

/// `Entry::Bridge::ALLOWED_KEYS` (+ EE `status`) + `PROCESSABLE_ALLOWED_KEYS`.
const BRIDGE_KEYS: &[&str] = &[
    "trigger",
    "parallel",
    "extends",
    "stage",
    "only",
    "except",
    "rules",
    "variables",
    "inherit",
    "allow_failure",
    "when",
    "needs",
    "resource_group",
    "environment",
    "interruptible",
];

const JOB_WHEN: &[&str] = &["on_success", "on_failure", "always", "manual", "delayed"];
const BRIDGE_WHEN: &[&str] = &["on_success", "on_failure", "always", "manual"];
/// `Processable` rules metadata.
const JOB_RULE_WHEN: &[&str] = &["on_success", "on_failure", "always", "never", "manual", "delayed"];
const JOB_RULE_KEYS: &[&str] = &[
    "if",
    "changes",
    "exists",
    "when",
    "start_in",
    "allow_failure",
    "variables",
    "needs",
    "interruptible",
];

/// Humanized attribute name as ActiveModel's `full_messages` prints it.
fn humanize(name: &str) -> String {
    let n = name.strip_suffix("_id").unwrap_or(name);
    n.replace('_', " ")
}

/// `Entry::Job` / `Entry::Bridge` (a job with `trigger:`): every key of one job.
/// `loc` is `jobs:<name>`.
pub(crate) fn job(ck: &mut Checker, loc: &str, name: &str, node: &Node) {
    // Entry::Jobs picks the class with `matching?`: Job (script or run), Bridge (trigger or
    // needs). A job that matches neither gets the jobs collection's message.
    let Some(map) = node.as_map() else {
        ck.entry(
            "jobs",
            node.span,
            format!(
                "{} config should implement the script:, run:, or trigger: keyword",
                humanize(name)
            ),
        );
        return;
    };
    let is_job = map.contains_key("script") || map.contains_key("run");
    let is_bridge = !is_job && (map.contains_key("trigger") || map.contains_key("needs"));
    if !is_job && !is_bridge {
        ck.entry(
            "jobs",
            node.span,
            format!(
                "{} config should implement the script:, run:, or trigger: keyword",
                humanize(name)
            ),
        );
        return;
    }
    processable(ck, loc, name, node, map);
    if is_job {
        job_only(ck, loc, node, map);
    } else {
        bridge_only(ck, loc, node, map);
    }
}

/// `Entry::Processable` validations and entries shared by jobs and bridges.
fn processable(ck: &mut Checker, loc: &str, name: &str, node: &Node, map: &Mapping) {
    if map.is_empty() {
        ck.entry(loc, node.span, "config can't be blank");
    }
    if name.chars().count() > 255 {
        ck.entry(loc, node.span, "name is too long (maximum is 255 characters)");
    }
    mutually_exclusive(ck, loc, node, map, &["script", "trigger"]);
    mutually_exclusive(ck, loc, node, map, &["run", "trigger"]);
    if present(map, "rules").is_some() {
        let bad: Vec<&str> = ["only", "except", "start_in"]
            .into_iter()
            .filter(|k| present(map, k).is_some())
            .collect();
        if !bad.is_empty() {
            let span = map.key_span(bad[0]).unwrap_or(node.span);
            ck.entry(
                loc,
                span,
                format!("config key may not be used with `rules`: {}", bad.join(", ")),
            );
        }
    }
    if let Some(n) = present(map, "extends")
        && !is_array_of_strings_or_string(n)
    {
        ck.entry(loc, n.span, "extends should be an array of strings or a string");
    }
    type_string(ck, loc, map, "resource_group", "resource group");

    if let Some(n) = present(map, "stage") {
        stage_entry(ck, &at(loc, "stage"), n);
    }
    for key in ["only", "except"] {
        if let Some(n) = present(map, key) {
            policy(ck, &at(loc, key), n);
        }
    }
    if let Some(n) = present(map, "rules") {
        if !nested_array_of_hashes(n, 10) {
            ck.entry(
                loc,
                n.span,
                "rules should be an array containing hashes and arrays of hashes",
            );
        } else {
            rules(ck, &at(loc, "rules"), n, JOB_RULE_WHEN, JOB_RULE_KEYS, &["job"]);
        }
    }
    if let Some(n) = present(map, "variables") {
        variables_with(ck, &at(loc, "variables"), n, Some(&["value", "expand"]));
    }
    if let Some(n) = present(map, "inherit") {
        inherit(ck, &at(loc, "inherit"), n);
    }
    if let Some(n) = present(map, "environment") {
        environment(ck, &at(loc, "environment"), n);
    }
    if let Some(n) = present(map, "interruptible") {
        boolean_entry(ck, &at(loc, "interruptible"), n);
    }
}

/// `validate_nested_array` with hashes as leaves (`NestedArrayOfHashesOrArraysValidator`).
fn nested_array_of_hashes(n: &Node, max_level: usize) -> bool {
    fn walk(n: &Node, level: usize) -> bool {
        match &n.value {
            Value::Seq(items) => {
                level > 0
                    && items
                        .iter()
                        .all(|i| matches!(i.value, Value::Map(_)) || walk(i, level - 1))
            }
            _ => false,
        }
    }
    walk(n, max_level)
}

/// The keywords a job and `default:` share (and a job inherits), checked the same way in
/// both places.
fn inheritable_keywords(ck: &mut Checker, loc: &str, map: &Mapping) {
    if let Some(n) = present(map, "hooks") {
        hooks(ck, &at(loc, "hooks"), n);
    }
    if let Some(n) = present(map, "cache") {
        caches(ck, &at(loc, "cache"), n);
    }
    if let Some(n) = present(map, "image") {
        image(ck, &at(loc, "image"), n);
    }
    if let Some(n) = present(map, "services") {
        services(ck, &at(loc, "services"), n);
    }
    if let Some(n) = present(map, "timeout") {
        timeout(ck, &at(loc, "timeout"), n);
    }
    if let Some(n) = present(map, "retry") {
        retry(ck, n);
    }
    if let Some(n) = present(map, "tags") {
        tags(ck, &at(loc, "tags"), n);
    }
    if let Some(n) = present(map, "artifacts") {
        artifacts(ck, &at(loc, "artifacts"), n);
    }
}

/// What only `Entry::Job` (+ EE) checks.
fn job_only(ck: &mut Checker, loc: &str, node: &Node, map: &Mapping) {
    check_keys(ck, loc, node, map, JOB_KEYS);
    mutually_exclusive(ck, loc, node, map, &["script", "run"]);
    if !map.contains_key("run") {
        presence(ck, loc, node, map, "script", "script");
    }
    if let Some(n) = present(map, "when") {
        if !is_string(n) {
            ck.entry(loc, n.span, "when should be a string");
        }
        if !n.as_str().is_some_and(|s| JOB_WHEN.contains(&s)) {
            ck.entry(
                loc,
                n.span,
                format!("when should be one of: {}", JOB_WHEN.join(", ")),
            );
        }
    }
    if let Some(n) = present(map, "dependencies")
        && !is_array_of_strings(n)
    {
        ck.entry(loc, n.span, "dependencies should be an array of strings");
    }
    if let Some(n) = present(map, "allow_failure") {
        allow_failure(ck, loc, n);
    }
    type_string(ck, loc, map, "manual_confirmation", "manual confirmation");
    if let Some(n) = present(map, "run") {
        run_steps(ck, loc, n);
    }
    // start_in: required duration for `when: delayed`, absent otherwise.
    let delayed = map.get("when").and_then(Node::as_str) == Some("delayed");
    let has_rules = map.contains_key("rules");
    if delayed {
        match present(map, "start_in") {
            Some(n) => duration(ck, loc, "start in", n, Some(WEEK), false),
            None => {
                let span = map.get("start_in").map(|n| n.span).unwrap_or(node.span);
                ck.entry(loc, span, "start in should be a duration");
                ck.entry(loc, span, "start in should not exceed the limit");
            }
        }
    }
    if (has_rules || !delayed)
        && let Some(n) = map.get("start_in").filter(|n| !blank(n))
    {
        ck.entry(loc, n.span, "start in must be blank");
    }
    // publish: only in a pages job (`name == pages` or a present `pages:`).
    if let Some(n) = map.get("publish").filter(|n| !blank(n)) {
        let name_is_pages = loc.rsplit_once(':').is_some_and(|(_, n)| n == "pages");
        let pages_job = present(map, "pages").is_some_and(|p| !blank(p))
            || (name_is_pages && map.get("pages").and_then(Node::as_bool) != Some(false));
        if !pages_job {
            ck.entry(loc, n.span, "publish can only be used within a `pages` job");
        }
    }

    for key in ["before_script", "script", "after_script"] {
        if let Some(n) = present(map, key) {
            commands(ck, &at(loc, key), n);
        }
    }
    inheritable_keywords(ck, loc, map);
    if let Some(n) = present(map, "needs") {
        needs(ck, &at(loc, "needs"), n, &["job", "cross_dependency"]);
        needs_limit(ck, loc, n);
        dependencies_in_needs(ck, loc, map, n);
    }
    if let Some(n) = present(map, "coverage") {
        coverage(ck, &at(loc, "coverage"), n);
    }
    if let Some(n) = present(map, "release") {
        release(ck, &at(loc, "release"), n);
    }
    if let Some(n) = present(map, "parallel") {
        parallel(ck, &at(loc, "parallel"), n, true);
    }
    if let Some(n) = present(map, "id_tokens") {
        id_tokens(ck, &at(loc, "id_tokens"), n);
    }
    if let Some(n) = present(map, "publish")
        && !is_string(n)
    {
        ck.entry(&at(loc, "publish"), n.span, "config should be a string");
    }
    if let Some(n) = present(map, "pages") {
        pages(ck, &at(loc, "pages"), n);
    }
    if let Some(n) = present(map, "secrets") {
        secrets(ck, &at(loc, "secrets"), n);
    }
    if let Some(n) = present(map, "dast_configuration") {
        dast_configuration(ck, &at(loc, "dast_configuration"), n);
    }
    if let Some(n) = present(map, "identity")
        && n.as_str() != Some("google_cloud")
    {
        ck.entry(
            &at(loc, "identity"),
            n.span,
            "config should be one of: google_cloud",
        );
    }
}

/// What only `Entry::Bridge` checks.
fn bridge_only(ck: &mut Checker, loc: &str, node: &Node, map: &Mapping) {
    check_keys(ck, loc, node, map, BRIDGE_KEYS);
    if let Some(n) = present(map, "when")
        && !n.as_str().is_some_and(|s| BRIDGE_WHEN.contains(&s))
    {
        ck.entry(
            loc,
            n.span,
            format!("when should be one of: {}", BRIDGE_WHEN.join(", ")),
        );
    }
    boolean(ck, loc, map, "allow_failure", "allow failure");
    if let Some(n) = present(map, "trigger") {
        trigger(ck, &at(loc, "trigger"), n);
    }
    let mut bridge_needs = 0;
    if let Some(n) = present(map, "needs") {
        bridge_needs = needs(ck, &at(loc, "needs"), n, &["job", "bridge"]);
        needs_limit(ck, loc, n);
    }
    if present(map, "trigger").is_none() && bridge_needs == 0 {
        ck.entry(
            loc,
            node.span,
            "config should contain one of the keywords; trigger, status or needs:pipeline",
        );
    }
    if bridge_needs > 1 {
        ck.entry(loc, node.span, "config should contain at most one bridge need");
    }
    if let Some(n) = present(map, "parallel") {
        parallel(ck, &at(loc, "parallel"), n, false);
    }
}

/// `Entry::Job`'s composed check: every `dependencies` entry must also be a same-pipeline
/// need.
fn dependencies_in_needs(ck: &mut Checker, loc: &str, map: &Mapping, needs: &Node) {
    let Some(deps) = present(map, "dependencies").and_then(Node::as_seq) else {
        return;
    };
    if deps.is_empty() || !deps.iter().all(is_string) {
        return;
    }
    let items: Vec<&Node> = match &needs.value {
        Value::Seq(s) => s.iter().collect(),
        Value::Map(_) => vec![needs],
        _ => return,
    };
    let mut job_needs: Vec<&str> = Vec::new();
    let mut cross = false;
    for i in items {
        match &i.value {
            Value::Str(s) => job_needs.push(s),
            Value::Map(m) if m.contains_key("job") => {
                if m.contains_key("project") || m.contains_key("pipeline") || m.contains_key("ref") {
                    cross = true;
                } else if let Some(j) = m.get("job").and_then(Node::as_str) {
                    job_needs.push(j);
                }
            }
            _ => {}
        }
    }
    if job_needs.is_empty() {
        if cross {
            ck.entry(
                loc,
                needs.span,
                "needs corresponding to dependencies must be from the same pipeline",
            );
        }
        return;
    }
    let missing: Vec<&str> = deps
        .iter()
        .filter_map(Node::as_str)
        .filter(|d| !job_needs.contains(d))
        .collect();
    if !missing.is_empty() {
        let span = map.get("dependencies").map_or(needs.span, |d| d.span);
        ck.entry(
            loc,
            span,
            format!("dependencies the {} should be part of needs", missing.join(", ")),
        );
    }
}

/// `needs` limit from `Gitlab::Ci::Pipeline::Seed::Build` (plan limit `ci_needs_size_limit`,
/// 50 by default).
fn needs_limit(ck: &mut Checker, loc: &str, n: &Node) {
    const LIMIT: usize = 50;
    if let Some(items) = n.as_seq()
        && items.len() > LIMIT
    {
        let name = loc.strip_prefix("jobs:").unwrap_or(loc);
        ck.verbatim(
                Some(n.span),
                format!(
                    "{name}: one job can only need {LIMIT} others, but you have listed {}. See needs keyword documentation for more details",
                    items.len()
                ),
            );
    }
}

/// `Entry::AllowFailure`: a boolean or `{exit_codes: int | [int]}`.
fn allow_failure(ck: &mut Checker, job_loc: &str, n: &Node) {
    let loc = at(job_loc, "allow_failure");
    match &n.value {
        Value::Bool(_) => {}
        Value::Map(m) => {
            check_keys(ck, &loc, n, m, &["exit_codes"]);
            if let Some(e) = present(m, "exit_codes")
                && !is_int_or_array_of_ints(e)
            {
                ck.entry(
                    &loc,
                    e.span,
                    "exit codes should be an array of integers or an integer",
                );
            }
        }
        _ => {
            // The job's `hash_or_boolean` validation and `Entry::AllowFailure`'s own.
            ck.entry(
                job_loc,
                n.span,
                "allow failure should be a hash or a boolean value",
            );
            ck.entry(&loc, n.span, "config should be a hash or a boolean value");
        }
    }
}

fn is_int_or_array_of_ints(n: &Node) -> bool {
    is_int(n) || n.as_seq().is_some_and(|s| s.iter().all(is_int))
}

/// `Entry::Boolean`.
fn boolean_entry(ck: &mut Checker, loc: &str, n: &Node) {
    if !is_bool(n) {
        ck.entry(loc, n.span, "config should be a boolean value");
    }
}

/// `Entry::Commands` (script, before_script, after_script, hooks scripts).
pub(crate) fn commands(ck: &mut Checker, loc: &str, n: &Node) {
    if !is_nested_strings(n, 10) {
        ck.entry(
            loc,
            n.span,
            "config should be a string or a nested array of strings up to 10 levels deep",
        );
    }
}

/// `Entry::Stage`.
fn stage_entry(ck: &mut Checker, loc: &str, n: &Node) {
    if !is_string(n) {
        ck.entry(loc, n.span, "config should be a string");
    }
}

/// `Entry::Hooks`.
fn hooks(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    check_keys(ck, loc, n, m, &["pre_get_sources_script"]);
    if let Some(s) = present(m, "pre_get_sources_script") {
        commands(ck, &at(loc, "pre_get_sources_script"), s);
    }
}

/// `Entry::Tags`.
fn tags(ck: &mut Checker, loc: &str, n: &Node) {
    if !is_array_of_strings(n) {
        ck.entry(loc, n.span, "config should be an array of strings");
        return;
    }
    // `config.size >= TAGS_LIMIT`: 50 tags are already too many.
    if n.as_seq().is_some_and(|s| s.len() >= 50) {
        ck.entry(loc, n.span, "config must be less than the limit of 50 tags");
    }
}

/// `Entry::Timeout`.
fn timeout(ck: &mut Checker, loc: &str, n: &Node) {
    duration(ck, loc, "config", n, Some(MONTH), false);
}

/// `Entry::Coverage`.
fn coverage(ck: &mut Checker, loc: &str, n: &Node) {
    if !n.as_str().is_some_and(is_re2_regexp) {
        ck.entry(loc, n.span, "config must be a regular expression with re2 syntax");
    }
}

/// `Entry::Retry` (SimpleRetry, FullRetry). GitLab overrides `location` to `retry`.
fn retry(ck: &mut Checker, n: &Node) {
    const REASONS: &[&str] = &[
        "always",
        "unknown_failure",
        "script_failure",
        "api_failure",
        "stuck_or_timeout_failure",
        "runner_system_failure",
        "missing_dependency_failure",
        "runner_unsupported",
        "stale_schedule",
        "job_execution_timeout",
        "archived_failure",
        "unmet_prerequisites",
        "scheduler_failure",
        "data_integrity_failure",
        "forward_deployment_failure",
        "user_blocked",
        "project_deleted",
        "ci_quota_exceeded",
        "pipeline_loop_detected",
        "no_matching_runner",
        "trace_size_exceeded",
        "builds_disabled",
        "environment_creation_failure",
        "deployment_rejected",
        "failed_outdated_deployment_job",
        "protected_environment_failure",
        "insufficient_bridge_permissions",
        "downstream_bridge_project_not_found",
        "invalid_bridge_trigger",
        "upstream_bridge_project_not_found",
        "insufficient_upstream_permissions",
        "bridge_pipeline_is_child_pipeline",
        "downstream_pipeline_creation_failed",
        "secrets_provider_not_found",
        "reached_max_descendant_pipelines_depth",
        "ip_restriction_failure",
        "reached_max_pipeline_hierarchy_size",
        "reached_downstream_pipeline_trigger_rate_limit",
        "runner_provisioning_timeout",
    ];
    let loc = "retry";
    match &n.value {
        Value::Int(_) => numericality(ck, loc, "config", n, 0, 2),
        Value::Map(m) => {
            check_keys(ck, loc, n, m, &["max", "when", "exit_codes"]);
            if let Some(max) = present(m, "max") {
                numericality(ck, loc, "max", max, 0, 2);
            }
            if let Some(w) = present(m, "when") {
                if !is_array_of_strings_or_string(w) {
                    ck.entry(loc, w.span, "when should be an array of strings or a string");
                } else if let Some(s) = w.as_str() {
                    if !REASONS.contains(&s) {
                        ck.entry(loc, w.span, "when is not included in the list");
                    }
                } else if let Some(items) = w.as_seq() {
                    let unknown: Vec<&str> = items
                        .iter()
                        .filter_map(Node::as_str)
                        .filter(|s| !REASONS.contains(s))
                        .collect();
                    if !unknown.is_empty() {
                        ck.entry(
                            loc,
                            w.span,
                            format!("when contains unknown values: {}", unknown.join(", ")),
                        );
                    }
                }
            }
            if let Some(e) = present(m, "exit_codes")
                && !is_int_or_array_of_ints(e)
            {
                ck.entry(
                    loc,
                    e.span,
                    "exit codes should be an array of integers or an integer",
                );
            }
        }
        _ => ck.entry("retry config", n.span, "has to be either an integer or a hash"),
    }
}

/// `Entry::Product::Parallel` (ParallelBuilds, MatrixBuilds, Matrix, Product::Variables).
fn parallel(ck: &mut Checker, loc: &str, n: &Node, numeric_allowed: bool) {
    match &n.value {
        Value::Int(_) | Value::Float(_) => {
            numericality(ck, loc, "config", n, 1, 200);
            if !numeric_allowed {
                ck.entry(loc, n.span, "config cannot use \"parallel: <number>\".");
            }
        }
        Value::Map(m) => {
            check_keys(ck, loc, n, m, &["matrix"]);
            required_keys(ck, loc, n, m, &["matrix"]);
            if let Some(mx) = present(m, "matrix") {
                matrix(ck, &at(loc, "matrix"), mx);
            }
        }
        _ => ck.entry(loc, n.span, "should be an integer or a hash"),
    }
}

/// `Entry::Product::Matrix`: an array of hashes whose values are scalars or arrays.
fn matrix(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(items) = n.as_seq().filter(|s| s.iter().all(|i| i.as_map().is_some())) else {
        ck.entry(loc, n.span, "config should be an array of hashes");
        return;
    };
    let vloc = at(loc, "variables");
    let mut total: u64 = 0;
    for item in items {
        let Some(m) = item.as_map() else { continue };
        let ok = m
            .iter()
            .all(|(_, v)| is_alnum(v) || v.as_seq().is_some_and(|s| s.iter().all(is_alnum)));
        if !ok {
            ck.entry(
                &vloc,
                item.span,
                "config should be a hash of key value pairs, value can be an array",
            );
        }
        if m.is_empty() {
            ck.entry(&vloc, item.span, "config requires at least 1 items");
        }
        let product = m.iter().fold(1u64, |acc, (_, v)| {
            acc.saturating_mul(v.as_seq().map_or(1, |s| s.len() as u64))
        });
        total = total.saturating_add(product);
    }
    if total > 200 {
        ck.entry(loc, n.span, "config generates too many jobs (maximum is 200)");
    }
}

// ---------------------------------------------------------------------------------------
// Entry::Policy (only / except) — lib/gitlab/ci/config/entry/policy.rb
// ---------------------------------------------------------------------------------------

fn policy(ck: &mut Checker, loc: &str, n: &Node) {
    match &n.value {
        Value::Seq(_) => {
            if !is_array_of_strings_or_regexps(n) {
                ck.entry(
                    loc,
                    n.span,
                    "config should be an array of strings or regular expressions using re2 syntax",
                );
            }
        }
        Value::Map(m) => {
            if m.is_empty() {
                ck.entry(loc, n.span, "config can't be blank");
            }
            check_keys(ck, loc, n, m, &["refs", "kubernetes", "variables", "changes"]);
            if let Some(r) = present(m, "refs")
                && !is_array_of_strings_or_regexps(r)
            {
                ck.entry(
                    loc,
                    r.span,
                    "refs should be an array of strings or regular expressions using re2 syntax",
                );
            }
            if let Some(k) = present(m, "kubernetes")
                && ruby_s(k) != "active"
            {
                ck.entry(loc, k.span, format!("kubernetes unknown value: {}", ruby_s(k)));
            }
            if let Some(v) = present(m, "variables") {
                if !is_array_of_strings(v) {
                    ck.entry(loc, v.span, "variables should be an array of strings");
                } else if v.as_seq().is_some_and(|s| {
                    s.iter()
                        .filter_map(Node::as_str)
                        .any(|e| expression_problem(e).is_some())
                }) {
                    ck.entry(loc, v.span, "variables invalid expression syntax");
                }
            }
            if let Some(c) = present(m, "changes")
                && !is_array_of_strings(c)
            {
                ck.entry(loc, c.span, "changes should be an array of strings");
            }
        }
        _ => ck.entry(loc, n.span, "has to be either an array of conditions or a hash"),
    }
}

// ---------------------------------------------------------------------------------------
// Entry::Rules, Entry::Rules::Rule (+ Changes, Exists) — lib/gitlab/ci/config/entry/rules.rb, rules/rule.rb,
// rules/rule/changes.rb, rules/rule/exists.rb, spec/lib/gitlab/ci/config/entry/rules/rule_spec.rb
// ---------------------------------------------------------------------------------------

/// `Entry::Rules`: a non-empty array (nested arrays from `!reference` are flattened).
/// `allowed_needs` is the `needs` metadata of rule-level needs.
fn rules(
    ck: &mut Checker,
    loc: &str,
    n: &Node,
    allowed_when: &[&str],
    allowed_keys: &[&str],
    allowed_needs: &[&str],
) {
    if blank(n) {
        ck.entry(loc, n.span, "config can't be blank");
        return;
    }
    let Some(items) = n.as_seq() else {
        ck.entry(loc, n.span, "config should be a array");
        return;
    };
    let mut flat = Vec::new();
    flatten(items, &mut flat);
    let rloc = at(loc, "rule");
    for r in flat {
        rule(ck, &rloc, r, allowed_when, allowed_keys, allowed_needs);
    }
}

fn flatten<'a>(items: &'a [Node], out: &mut Vec<&'a Node>) {
    for i in items {
        match &i.value {
            Value::Seq(inner) => flatten(inner, out),
            _ => out.push(i),
        }
    }
}

/// `Entry::Rules::Rule`.
fn rule(
    ck: &mut Checker,
    loc: &str,
    n: &Node,
    allowed_when: &[&str],
    allowed_keys: &[&str],
    allowed_needs: &[&str],
) {
    if blank(n) {
        ck.entry(loc, n.span, "config can't be blank");
    }
    // `validates :config, presence: true` and `type: { with: Hash }` both fire on nil.
    let Some(m) = n.as_map() else {
        ck.entry(loc, n.span, "config should be a hash");
        return;
    };
    let delayed = m.get("when").and_then(Node::as_str) == Some("delayed");
    if !delayed && m.contains_key("start_in") {
        let span = m.key_span("start_in").unwrap_or(n.span);
        ck.entry(loc, span, "config contains disallowed keys: start_in");
    }
    if delayed
        && presence(ck, loc, n, m, "start_in", "start in")
        && let Some(s) = m.get("start_in")
    {
        duration(ck, loc, "start in", s, Some(WEEK), false);
    }
    if let Some(i) = present(m, "if") {
        let ok = match i.as_str() {
            Some(src) => expression_problem(src).is_none(),
            None => false,
        };
        if !ok {
            ck.entry(loc, i.span, "if invalid expression syntax");
        }
    }
    boolean(ck, loc, m, "allow_failure", "allow failure");
    boolean(ck, loc, m, "interruptible", "interruptible");
    if let Some(w) = present(m, "when") {
        let s = ruby_s(w);
        if !allowed_when.contains(&s.as_str()) {
            ck.entry(loc, w.span, format!("when unknown value: {s}"));
        }
    }
    check_keys(ck, loc, n, m, allowed_keys);
    if let Some(c) = present(m, "changes") {
        changes(ck, &at(loc, "changes"), c);
    }
    if let Some(e) = present(m, "exists") {
        exists(ck, &at(loc, "exists"), e, true);
    }
    if let Some(v) = present(m, "variables") {
        variables_with(ck, &at(loc, "variables"), v, None);
    }
    if let Some(nd) = present(m, "needs") {
        needs(ck, &at(loc, "needs"), nd, allowed_needs);
    }
    if let Some(a) = present(m, "auto_cancel") {
        auto_cancel(ck, &at(loc, "auto_cancel"), a);
    }
}

/// `Entry::Rules::Rule::Changes` (array, or `paths` + `compare_to`).
fn changes(ck: &mut Checker, loc: &str, n: &Node) {
    match &n.value {
        Value::Seq(items) => {
            if !is_array_of_strings(n) {
                ck.entry(loc, n.span, "config should be an array of strings");
            } else if items.len() > 50 {
                ck.entry(loc, n.span, "config has too many entries (maximum 50)");
            }
        }
        Value::Map(m) => {
            check_keys(ck, loc, n, m, &["paths", "compare_to"]);
            required_keys(ck, loc, n, m, &["paths"]);
            if let Some(p) = present(m, "paths") {
                if !is_array_of_strings(p) {
                    ck.entry(loc, p.span, "paths should be an array of strings");
                } else if p.as_seq().is_some_and(|s| s.len() > 50) {
                    ck.entry(loc, p.span, "paths has too many entries (maximum 50)");
                }
            }
            type_string(ck, loc, m, "compare_to", "compare to");
        }
        _ => ck.entry(loc, n.span, "should be an array or a hash"),
    }
}

/// `Entry::Rules::Rule::Exists` (string, array, or `paths`/`project`/`ref`).
/// `paths_limit` is false for `include:rules` (`disable_simple_exists_paths_limit`).
fn exists(ck: &mut Checker, loc: &str, n: &Node, paths_limit: bool) {
    match &n.value {
        Value::Str(_) => {}
        Value::Seq(items) => {
            if !is_array_of_strings(n) {
                ck.entry(loc, n.span, "config should be an array of strings");
            } else if paths_limit && items.len() > 50 {
                ck.entry(loc, n.span, "config has too many entries (maximum 50)");
            }
        }
        Value::Map(m) => {
            if m.is_empty() {
                return;
            }
            check_keys(ck, loc, n, m, &["paths", "project", "ref"]);
            required_keys(ck, loc, n, m, &["paths"]);
            if present(m, "ref").is_some() {
                required_keys(ck, loc, n, m, &["project"]);
            }
            if let Some(p) = present(m, "paths") {
                if !is_array_of_strings(p) {
                    ck.entry(loc, p.span, "paths should be an array of strings");
                } else if p.as_seq().is_some_and(|s| s.len() > 50) {
                    ck.entry(loc, p.span, "paths has too many entries (maximum 50)");
                }
            }
            type_string(ck, loc, m, "project", "project");
            type_string(ck, loc, m, "ref", "ref");
        }
        _ => ck.entry(loc, n.span, "should be a string, an array of strings, or a hash"),
    }
}

// ---------------------------------------------------------------------------------------
// Entry::Needs, Entry::Need (+ EE::Gitlab::Ci::Config::Entry::Need) — lib/gitlab/ci/config/entry/needs.rb, need.rb,
// ee/lib/ee/gitlab/ci/config/entry/need.rb
// ---------------------------------------------------------------------------------------

/// Checks `needs:` and returns how many bridge needs (`needs:pipeline` without `job`) it has.
fn needs(ck: &mut Checker, loc: &str, n: &Node, allowed: &[&str]) -> usize {
    // `Entry::Needs` has no presence check: `needs: []` starts the job at once; only an
    // empty hash is refused.
    if n.as_map().is_some_and(Mapping::is_empty) {
        ck.entry(loc, n.span, "config can not be an empty hash");
        return 0;
    }
    let items: Vec<&Node> = match &n.value {
        Value::Seq(s) => s.iter().collect(),
        Value::Map(_) => vec![n],
        _ => {
            ck.entry(loc, n.span, "config can only be a hash or an array");
            return 0;
        }
    };
    let nloc = at(loc, "need");
    let mut types: Vec<&'static str> = Vec::new();
    let mut bridges = 0;
    for item in items {
        if let Some(t) = need(ck, &nloc, item) {
            if t == "bridge" {
                bridges += 1;
            }
            if !types.contains(&t) {
                types.push(t);
            }
        }
    }
    let invalid: Vec<&str> = types.iter().copied().filter(|t| !allowed.contains(t)).collect();
    if !invalid.is_empty() {
        ck.entry(
            loc,
            n.span,
            format!("config uses invalid types: {}", invalid.join(", ")),
        );
    }
    bridges
}

/// One need; returns its type (`job`, `cross_dependency`, `bridge`) when it has one.
fn need(ck: &mut Checker, loc: &str, n: &Node) -> Option<&'static str> {
    match &n.value {
        Value::Str(s) => {
            if s.trim().is_empty() {
                ck.entry(loc, n.span, "config can't be blank");
            }
            Some("job")
        }
        Value::Map(m) => {
            let has = |k: &str| m.contains_key(k);
            if has("job") && !(has("project") || has("ref") || has("pipeline")) {
                // JobHash
                check_keys(ck, loc, n, m, &["job", "artifacts", "optional", "parallel"]);
                need_job_field(ck, loc, n, m);
                boolean(ck, loc, m, "artifacts", "artifacts");
                boolean(ck, loc, m, "optional", "optional");
                if let Some(p) = present(m, "parallel") {
                    parallel(ck, &at(loc, "parallel"), p, false);
                }
                Some("job")
            } else if has("job") && has("pipeline") && !has("project") {
                // CrossPipelineDependency
                check_keys(ck, loc, n, m, &["pipeline", "job", "artifacts"]);
                presence_and_string(ck, loc, n, m, "pipeline", "pipeline");
                need_job_field(ck, loc, n, m);
                boolean(ck, loc, m, "artifacts", "artifacts");
                Some("cross_dependency")
            } else if has("job") && has("project") {
                // EE CrossProjectDependency
                check_keys(ck, loc, n, m, &["job", "project", "ref", "artifacts", "optional"]);
                need_job_field(ck, loc, n, m);
                presence(ck, loc, n, m, "project", "project");
                type_string(ck, loc, m, "project", "project");
                presence(ck, loc, n, m, "ref", "ref");
                type_string(ck, loc, m, "ref", "ref");
                boolean(ck, loc, m, "artifacts", "artifacts");
                Some("cross_dependency")
            } else if !has("job") {
                // EE BridgeHash
                check_keys(ck, loc, n, m, &["pipeline"]);
                presence_and_string(ck, loc, n, m, "pipeline", "pipeline");
                Some("bridge")
            } else {
                ck.entry(loc, n.span, "has an unsupported type");
                None
            }
        }
        _ => {
            ck.entry(loc, n.span, "has an unsupported type");
            None
        }
    }
}

fn need_job_field(ck: &mut Checker, loc: &str, n: &Node, m: &Mapping) {
    presence_and_string(ck, loc, n, m, "job", "job");
}

// ---------------------------------------------------------------------------------------
// Entry::Caches, Entry::Cache, Entry::Key, Entry::Files, Entry::Paths — lib/gitlab/ci/config/entry/caches.rb, cache.rb,
// key.rb, files.rb, prefix.rb, paths.rb; spec/lib/gitlab/ci/yaml_processor_spec.rb (cache:key paths)
// ---------------------------------------------------------------------------------------

/// `Entry::Caches` (a hash or up to 4 hashes). `Caches#initialize` clears its key, so its own
/// messages carry the class name (`...:caches config ...`) while each element, keyed `cache`,
/// reads `...:cache ...` (`Node#location` drops nil ancestor keys).
pub(crate) fn caches(ck: &mut Checker, loc: &str, n: &Node) {
    let own = match loc.rsplit_once(':') {
        Some((parent, _)) => at(parent, "caches"),
        None => "caches".to_string(),
    };
    match &n.value {
        Value::Map(_) => cache(ck, loc, n),
        Value::Seq(items) => {
            if items.len() > 4 {
                ck.entry(&own, n.span, "config no more than 4 caches can be created");
            }
            for i in items {
                cache(ck, loc, i);
            }
        }
        _ => ck.entry(&own, n.span, "config can only be a hash or an array"),
    }
}

/// `Entry::Cache`.
fn cache(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    check_keys(
        ck,
        loc,
        n,
        m,
        &[
            "key",
            "untracked",
            "paths",
            "when",
            "policy",
            "unprotect",
            "fallback_keys",
        ],
    );
    if let Some(p) = m.get("policy").filter(|p| !blank(p)) {
        match p.as_str() {
            None => ck.entry(loc, p.span, "policy should be a string"),
            Some(s) => {
                let var = regex::Regex::new(r"\$\w").is_ok_and(|r| r.is_match(s));
                if !(s.contains("pull") || s.contains("push") || var) {
                    ck.entry(
                        loc,
                        p.span,
                        "policy should be a variable or one of: pull-push, push, pull",
                    );
                }
            }
        }
    }
    if let Some(w) = present(m, "when") {
        if !is_string(w) {
            ck.entry(loc, w.span, "when should be a string");
        }
        if !w
            .as_str()
            .is_some_and(|s| ["on_success", "on_failure", "always"].contains(&s))
        {
            ck.entry(
                loc,
                w.span,
                "when should be one of: on_success, on_failure, always",
            );
        }
    }
    if let Some(f) = present(m, "fallback_keys") {
        if !is_array_of_strings(f) {
            ck.entry(
                &at(loc, "fallback_keys"),
                f.span,
                "config should be an array of strings",
            );
        } else if f.as_seq().is_some_and(|s| s.len() > 5) {
            ck.entry(loc, f.span, "fallback keys has to many entries (maximum 5)");
        }
    }
    if let Some(k) = present(m, "key") {
        cache_key(ck, &at(loc, "key"), k);
    }
    for key in ["unprotect", "untracked"] {
        if let Some(b) = present(m, key) {
            boolean_entry(ck, &at(loc, key), b);
        }
    }
    if let Some(p) = present(m, "paths")
        && !is_array_of_strings(p)
    {
        ck.entry(&at(loc, "paths"), p.span, "config should be an array of strings");
    }
}

/// `KeyValidator` on a string key.
fn key_string(ck: &mut Checker, loc: &str, attr: &str, n: &Node) {
    let Some(s) = n.as_str() else {
        ck.entry(loc, n.span, format!("{attr} should be a string or symbol"));
        return;
    };
    let path = percent_decode(s);
    if path.contains('/') {
        ck.entry(loc, n.span, format!("{attr} cannot contain the \"/\" character"));
    } else if path == "." || path == ".." {
        ck.entry(loc, n.span, format!("{attr} cannot be \".\" or \"..\""));
    }
}

/// `CGI.unescape`: `+` is a space and `%XX` a byte.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Entry::Key` (string, or `files`/`files_commits` + `prefix`).
fn cache_key(ck: &mut Checker, loc: &str, n: &Node) {
    match &n.value {
        Value::Str(_) => key_string(ck, loc, "config", n),
        Value::Map(m) => {
            check_keys(ck, loc, n, m, &["files", "files_commits", "prefix"]);
            let n_files = ["files", "files_commits"]
                .iter()
                .filter(|k| m.contains_key(k))
                .count();
            if n_files != 1 {
                ck.entry(
                    loc,
                    n.span,
                    "config must use exactly one of these keys: files, files_commits",
                );
            }
            for key in ["files", "files_commits"] {
                if let Some(f) = m.get(key) {
                    let floc = at(loc, key);
                    if !is_array_of_strings(f) {
                        ck.entry(&floc, f.span, "config should be an array of strings");
                    } else if let Some(s) = f.as_seq() {
                        if s.is_empty() {
                            ck.entry(&floc, f.span, "config requires at least 1 item");
                        } else if s.len() > 2 {
                            ck.entry(&floc, f.span, "config has too many items (maximum is 2)");
                        }
                    }
                }
            }
            if let Some(p) = present(m, "prefix") {
                key_string(ck, &at(loc, "prefix"), "config", p);
            }
        }
        _ => ck.entry(loc, n.span, "should be a hash, a string or a symbol"),
    }
}

// ---------------------------------------------------------------------------------------
// Entry::Image, Entry::Service(s), Entry::Imageable, PullPolicy, Ports — lib/gitlab/ci/config/entry/image.rb, service.rb,
// services.rb, imageable.rb, pull_policy.rb, schemas/imageable/executor_opts.json
// ---------------------------------------------------------------------------------------

const IMAGE_KEYS: &[&str] = &[
    "name",
    "entrypoint",
    "ports",
    "pull_policy",
    "docker",
    "kubernetes",
];
const SERVICE_KEYS: &[&str] = &[
    "name",
    "entrypoint",
    "command",
    "alias",
    "ports",
    "variables",
    "pull_policy",
    "docker",
    "kubernetes",
];

/// `Entry::Image`.
pub(crate) fn image(ck: &mut Checker, loc: &str, n: &Node) {
    imageable(ck, loc, n, IMAGE_KEYS);
}

/// `Entry::Services`: an array of `Entry::Service`.
pub(crate) fn services(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(items) = n.as_seq() else {
        ck.entry(loc, n.span, "config should be a array");
        return;
    };
    let sloc = at(loc, "service");
    let mut aliases: Vec<String> = Vec::new();
    for i in items {
        imageable(ck, &sloc, i, SERVICE_KEYS);
        if let Some(m) = i.as_map() {
            type_string(ck, &sloc, m, "alias", "alias");
            // `entry :command, Entry::Commands` (a string or nested arrays, like `script`).
            if let Some(c) = present(m, "command") {
                commands(ck, &at(&sloc, "command"), c);
            }
            if let Some(v) = present(m, "variables") {
                // `Entry::Service` gives its variables no `allowed_value_data`.
                variables_with(ck, &at(&sloc, "variables"), v, None);
            }
            if m.contains_key("ports")
                && let Some(a) = m.get("alias").and_then(Node::as_str)
            {
                aliases.push(a.to_string());
            }
        }
    }
    let mut sorted = aliases.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != aliases.len() {
        ck.entry(loc, n.span, "config alias must be unique in services with ports");
    }
}

/// `Entry::Imageable`: the hash-or-string shape shared by image and service.
fn imageable(ck: &mut Checker, loc: &str, n: &Node, keys: &[&str]) {
    match &n.value {
        Value::Str(_) => {}
        Value::Map(m) => {
            check_keys(ck, loc, n, m, keys);
            match m.get("name") {
                Some(v) if is_string(v) && !blank(v) => {}
                Some(v) if !blank(v) => ck.entry(loc, v.span, "name should be a string"),
                other => {
                    let span = other.map(|v| v.span).unwrap_or(n.span);
                    ck.entry(loc, span, "name can't be blank");
                    if other.is_none_or(|v| !is_string(v)) {
                        ck.entry(loc, span, "name should be a string");
                    }
                }
            }
            array_of_strings(ck, loc, m, "entrypoint", "entrypoint");
            if let Some(p) = present(m, "pull_policy") {
                pull_policy(ck, &at(loc, "pull_policy"), p);
            }
            // `disallowed_keys: %i[ports], unless: :with_image_ports?`; only GitLab's Web IDE
            // terminal config sets `with_image_ports`.
            if m.contains_key("ports") {
                let span = m.key_span("ports").unwrap_or(n.span);
                ck.entry(loc, span, "config contains disallowed keys: ports");
            }
            executor_opts(ck, loc, m);
        }
        _ => ck.entry(loc, n.span, "config should be a hash or a string"),
    }
}

/// `executor_opts` (`docker:` and `kubernetes:`, nulls dropped) against
/// `lib/gitlab/ci/config/entry/schemas/imageable/executor_opts.json`, reported with
/// `detail_errors: true`: one message per schema error, in json_schemer's wording.
fn executor_opts(ck: &mut Checker, loc: &str, m: &Mapping) {
    let attr = "executor opts";
    for (key, props) in [
        ("docker", &["platform", "user"][..]),
        ("kubernetes", &["user"][..]),
    ] {
        let Some(v) = present(m, key) else { continue };
        let Some(vm) = v.as_map() else {
            ck.entry(loc, v.span, format!("{attr} value at `/{key}` is not an object"));
            continue;
        };
        for (k, pv) in vm.iter() {
            let path = format!("/{key}/{k}");
            if !props.contains(&k) {
                ck.entry(
                    loc,
                    pv.span,
                    format!("{attr} object property at `{path}` is a disallowed additional property"),
                );
                continue;
            }
            let max = if k == "platform" { 64 } else { 255 };
            match &pv.value {
                Value::Str(s) if s.chars().count() < 1 => ck.entry(
                    loc,
                    pv.span,
                    format!("{attr} string length at `{path}` is less than: 1"),
                ),
                Value::Str(s) if s.chars().count() > max => ck.entry(
                    loc,
                    pv.span,
                    format!("{attr} string length at `{path}` is greater than: {max}"),
                ),
                Value::Str(_) => {}
                Value::Int(_) if key == "kubernetes" => {}
                _ if key == "kubernetes" => ck.entry(
                    loc,
                    pv.span,
                    format!("{attr} value at `{path}` is not one of the types: [\"string\", \"integer\"]"),
                ),
                _ => ck.entry(loc, pv.span, format!("{attr} value at `{path}` is not a string")),
            }
        }
    }
}

/// `Entry::PullPolicy` (`pull_policy.rb`).
fn pull_policy(ck: &mut Checker, loc: &str, n: &Node) {
    const ALLOWED: &[&str] = &["always", "never", "if-not-present"];
    if !is_array_of_strings_or_string(n) {
        ck.entry(loc, n.span, "config should be an array of strings or a string");
    }
    match &n.value {
        Value::Str(s) if !ALLOWED.contains(&s.as_str()) => {
            ck.entry(loc, n.span, "config is not included in the list");
        }
        Value::Seq(items) => {
            let unknown: Vec<String> = items
                .iter()
                .map(ruby_s)
                .filter(|s| !ALLOWED.contains(&s.as_str()))
                .collect();
            if !unknown.is_empty() {
                ck.entry(
                    loc,
                    n.span,
                    format!("config contains unknown values: {}", unknown.join(", ")),
                );
            }
            if items.is_empty() {
                ck.entry(loc, n.span, "config can't be blank");
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Entry::Artifacts, Entry::Reports, Reports::CoverageReport — lib/gitlab/ci/config/entry/artifacts.rb, reports.rb,
// reports/coverage_report.rb
// ---------------------------------------------------------------------------------------

const REPORT_KEYS: &[&str] = &[
    "junit",
    "codequality",
    "sast",
    "secret_detection",
    "dependency_scanning",
    "container_scanning",
    "dast",
    "browser_performance",
    "load_performance",
    "license_scanning",
    "metrics",
    "lsif",
    "dotenv",
    "terraform",
    "accessibility",
    "coverage_fuzzing",
    "api_fuzzing",
    "cluster_image_scanning",
    "requirements",
    "requirements_v2",
    "coverage_report",
    "cyclonedx",
    "annotations",
    "repository_xray",
];

/// `Entry::Artifacts`.
fn artifacts(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    check_keys(
        ck,
        loc,
        n,
        m,
        &[
            "name",
            "untracked",
            "paths",
            "reports",
            "when",
            "expire_in",
            "expose_as",
            "exclude",
            "public",
            "access",
        ],
    );
    let expose = m.get("expose_as").filter(|e| !e.is_null());
    if expose.is_some() {
        presence(ck, loc, n, m, "paths", "paths");
    }
    mutually_exclusive(ck, loc, n, m, &["access", "public"]);
    type_string(ck, loc, m, "name", "name");
    boolean(ck, loc, m, "public", "public");
    boolean(ck, loc, m, "untracked", "untracked");
    if array_of_strings(ck, loc, m, "paths", "paths")
        && expose.is_some()
        && let Some(p) = present(m, "paths")
        && p.as_seq()
            .is_some_and(|s| s.iter().filter_map(Node::as_str).any(|s| s.contains('*')))
    {
        ck.entry(loc, p.span, "paths can't contain '*' when used with 'expose_as'");
    }
    if let Some(e) = expose {
        match e.as_str() {
            None => ck.entry(loc, e.span, "expose as should be a string"),
            Some(s) => {
                if s.chars().count() > 100 {
                    ck.entry(loc, e.span, "expose as is too long (maximum is 100 characters)");
                }
                let ok = regex::Regex::new(r"\A\w[-\w ]*\z").is_ok_and(|r| r.is_match(s));
                if !ok {
                    ck.entry(
                        loc,
                        e.span,
                        "expose as can contain only letters, digits, '-', '_' and spaces",
                    );
                }
            }
        }
    }
    array_of_strings(ck, loc, m, "exclude", "exclude");
    if let Some(w) = present(m, "when") {
        if !is_string(w) {
            ck.entry(loc, w.span, "when should be a string");
        }
        if !w
            .as_str()
            .is_some_and(|s| ["on_success", "on_failure", "always"].contains(&s))
        {
            ck.entry(
                loc,
                w.span,
                "when should be one of: on_success, on_failure, always",
            );
        }
    }
    if let Some(e) = present(m, "expire_in") {
        duration(ck, loc, "expire in", e, None, true);
    }
    if let Some(a) = present(m, "access") {
        if !is_string(a) {
            ck.entry(loc, a.span, "access should be a string");
        }
        if !a
            .as_str()
            .is_some_and(|s| ["none", "developer", "all"].contains(&s))
        {
            ck.entry(loc, a.span, "access should be one of: none, developer, all");
        }
    }
    if let Some(r) = present(m, "reports") {
        if r.as_map().is_none() {
            ck.entry(loc, r.span, "reports should be a hash");
        }
        reports(ck, &at(loc, "reports"), r);
    }
}

/// `Entry::Reports`.
fn reports(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    check_keys(ck, loc, n, m, REPORT_KEYS);
    for (k, v) in m.iter() {
        if v.is_null() || k == "coverage_report" || !REPORT_KEYS.contains(&k) {
            continue;
        }
        if !is_array_of_strings_or_string(v) {
            ck.entry(
                loc,
                v.span,
                format!("{} should be an array of strings or a string", humanize(k)),
            );
        }
    }
    if let Some(c) = present(m, "coverage_report") {
        let cloc = at(loc, "coverage_report");
        let Some(cm) = expect_map(ck, &cloc, c) else {
            return;
        };
        check_keys(ck, &cloc, c, cm, &["coverage_format", "path"]);
        if presence(ck, &cloc, c, cm, "coverage_format", "coverage format")
            && let Some(f) = cm.get("coverage_format")
            && !f.as_str().is_some_and(|s| ["cobertura", "jacoco"].contains(&s))
        {
            ck.entry(
                &cloc,
                f.span,
                "coverage format must be one of supported formats: cobertura, jacoco",
            );
        }
        if presence(ck, &cloc, c, cm, "path", "path") {
            type_string(ck, &cloc, cm, "path", "path");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry::Environment, Entry::Kubernetes — lib/gitlab/ci/config/entry/environment.rb, kubernetes.rb
// ---------------------------------------------------------------------------------------

const ENV_NAME_MESSAGE: &str = "can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, but it cannot start or end with '/'";

/// `Entry::Environment`.
fn environment(ck: &mut Checker, loc: &str, n: &Node) {
    let (name, map) = match &n.value {
        Value::Str(_) => (Some(n), None),
        Value::Map(m) => (m.get("name"), Some(m)),
        _ => {
            ck.entry(loc, n.span, "config should be a hash or a string");
            return;
        }
    };
    match name {
        Some(nm) if !blank(nm) => match nm.as_str() {
            Some(s) => {
                let ok = s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_/${}. -".contains(c))
                    && !s.starts_with('/')
                    && !s.ends_with('/');
                if !ok {
                    ck.entry(loc, nm.span, format!("name {ENV_NAME_MESSAGE}"));
                }
            }
            None => ck.entry(loc, nm.span, format!("name {ENV_NAME_MESSAGE}")),
        },
        other => {
            let span = other.map(|v| v.span).unwrap_or(n.span);
            ck.entry(loc, span, "name can't be blank");
        }
    }
    let Some(m) = map else { return };
    check_keys(
        ck,
        loc,
        n,
        m,
        &[
            "name",
            "url",
            "action",
            "on_stop",
            "auto_stop_in",
            "kubernetes",
            "deployment_tier",
        ],
    );
    if let Some(u) = present(m, "url") {
        match u.as_str() {
            None => ck.entry(loc, u.span, "url should be a string"),
            Some(s) if s.chars().count() > 255 => {
                ck.entry(loc, u.span, "url is too long (maximum is 255 characters)")
            }
            Some(_) => {}
        }
    }
    if let Some(a) = present(m, "action") {
        if !is_string(a) {
            ck.entry(loc, a.span, "action should be a string");
        }
        if !a
            .as_str()
            .is_some_and(|s| ["start", "stop", "prepare", "verify", "access"].contains(&s))
        {
            ck.entry(
                loc,
                a.span,
                "action should be start, stop, prepare, verify, or access",
            );
        }
    }
    if let Some(t) = present(m, "deployment_tier") {
        if !is_string(t) {
            ck.entry(loc, t.span, "deployment tier should be a string");
        }
        if !t
            .as_str()
            .is_some_and(|s| ["production", "staging", "testing", "development", "other"].contains(&s))
        {
            ck.entry(
                loc,
                t.span,
                "deployment tier must be one of production, staging, testing, development, other",
            );
        }
    }
    type_string(ck, loc, m, "on_stop", "on stop");
    if let Some(a) = present(m, "auto_stop_in") {
        duration(ck, loc, "auto stop in", a, None, true);
    }
    if let Some(k) = present(m, "kubernetes") {
        if k.as_map().is_none() {
            ck.entry(loc, k.span, "kubernetes should be a hash");
        }
        kubernetes(ck, &at(loc, "kubernetes"), k);
    }
}

/// `Entry::Kubernetes` (environment's; `kubernetes.rb`). `managed_resources` and `dashboard`
/// are checked only for being hashes (GitLab checks them against JSON schemas).
fn kubernetes(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    if m.is_empty() {
        ck.entry(loc, n.span, "config can't be blank");
    }
    check_keys(
        ck,
        loc,
        n,
        m,
        &[
            "namespace",
            "agent",
            "flux_resource_path",
            "managed_resources",
            "dashboard",
        ],
    );
    type_string(ck, loc, m, "namespace", "namespace");
    type_string(ck, loc, m, "agent", "agent");
    type_string(ck, loc, m, "flux_resource_path", "flux resource path");
    let flux = m.get("flux_resource_path").is_some_and(|v| !blank(v));
    let dashboard = m.get("dashboard").filter(|v| !blank(v));
    let managed = m
        .get("managed_resources")
        .and_then(Node::as_map)
        .and_then(|mr| mr.get("enabled"))
        .and_then(Node::as_bool)
        == Some(true);
    if flux {
        presence(ck, loc, n, m, "namespace", "namespace");
    }
    if flux || dashboard.is_some() || managed {
        presence(ck, loc, n, m, "agent", "agent");
    }
    for key in ["managed_resources", "dashboard"] {
        if let Some(v) = present(m, key)
            && v.as_map().is_none()
        {
            ck.entry(
                loc,
                v.span,
                format!("{} value at root is not an object", humanize(key)),
            );
        }
    }
    if let Some(d) = dashboard.and_then(Node::as_map) {
        if m.get("namespace").is_some_and(|v| !blank(v)) && d.get("namespace").is_some_and(|v| !blank(v)) {
            ck.entry(
                loc,
                n.span,
                "namespace cannot be specified when dashboard.namespace is set",
            );
        }
        if flux && d.get("flux_resource_path").is_some_and(|v| !blank(v)) {
            ck.entry(
                loc,
                n.span,
                "flux resource path cannot be specified when dashboard.flux_resource_path is set",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry::Trigger (+ Trigger::Forward), Entry::Includes / Entry::Include — lib/gitlab/ci/config/entry/trigger.rb,
// trigger/forward.rb, includes.rb, include.rb, concerns/base_include.rb, concerns/base_includes.rb,
// include/rules.rb, include/rules/rule.rb
// ---------------------------------------------------------------------------------------

/// `Entry::Trigger`.
fn trigger(ck: &mut Checker, loc: &str, n: &Node) {
    match &n.value {
        Value::Str(s) => {
            if s.trim().is_empty() {
                ck.entry(loc, n.span, "config can't be blank");
            }
        }
        Value::Map(m) => {
            if m.contains_key("include") {
                check_keys(ck, loc, n, m, &["strategy", "include", "forward", "inputs"]);
                if let Some(i) = present(m, "include") {
                    includes(ck, &at(loc, "include"), i, Some(3));
                }
            } else if m.is_empty() {
                ck.entry(loc, n.span, "config can't be blank");
            } else {
                check_keys(
                    ck,
                    loc,
                    n,
                    m,
                    &["project", "branch", "strategy", "forward", "inputs"],
                );
                presence_and_string(ck, loc, n, m, "project", "project");
                type_string(ck, loc, m, "branch", "branch");
            }
            if let Some(s) = present(m, "strategy") {
                if !is_string(s) {
                    ck.entry(loc, s.span, "strategy should be a string");
                }
                if !s.as_str().is_some_and(|s| s == "depend" || s == "mirror") {
                    ck.entry(loc, s.span, "strategy should be depend or mirror");
                }
            }
            if let Some(f) = present(m, "forward") {
                let floc = at(loc, "forward");
                if let Some(fm) = expect_map(ck, &floc, f) {
                    check_keys(ck, &floc, f, fm, &["yaml_variables", "pipeline_variables"]);
                    boolean(ck, &floc, fm, "yaml_variables", "yaml variables");
                    boolean(ck, &floc, fm, "pipeline_variables", "pipeline variables");
                }
            }
            if let Some(i) = present(m, "inputs")
                && i.as_map().is_none()
            {
                ck.entry(&at(loc, "inputs"), i.span, "config should be a hash");
            }
        }
        _ => ck.entry(loc, n.span, "has to be either a string or a hash"),
    }
}

/// `Entry::Includes` (`array_or_string`, with a size cap for `trigger:include`; `max` is `Some`
/// exactly for `trigger:include`).
fn includes(ck: &mut Checker, loc: &str, n: &Node, max: Option<usize>) {
    match &n.value {
        Value::Str(_) => include_item(ck, &at(loc, "include"), n),
        Value::Seq(items) => {
            if let Some(max) = max
                && items.len() > max
            {
                ck.entry(loc, n.span, format!("config is too long (maximum is {max})"));
            }
            let iloc = at(loc, "include");
            for i in items {
                include_item(ck, &iloc, i);
            }
        }
        // `Entry::Includes` validates `array_or_string`. A top-level hash is still accepted:
        // `Config::External::Processor` consumes `include:` before the entries run, so only
        // `trigger:include` (checked by the bridge entry) sees this validation.
        Value::Map(_) if max.is_none() => include_item(ck, &at(loc, "include"), n),
        _ => ck.entry(loc, n.span, "config should be an array or a string"),
    }
}

const INCLUDE_KEYS: &[&str] = &[
    "local",
    "file",
    "remote",
    "project",
    "ref",
    "integrity",
    "template",
    "component",
    "artifact",
    "inputs",
    "job",
    "rules",
];

/// `Entry::Include` (with `Concerns::BaseInclude`).
fn include_item(ck: &mut Checker, loc: &str, n: &Node) {
    let m = match &n.value {
        Value::Str(_) => return,
        Value::Map(m) => m,
        _ => {
            ck.entry(loc, n.span, "config should be a hash or a string");
            return;
        }
    };
    check_keys(ck, loc, n, m, INCLUDE_KEYS);
    if present(m, "artifact").is_some() && blank_key(m, "job") {
        ck.entry(
            loc,
            n.span,
            "config must specify the job where to fetch the artifact from",
        );
    }
    if present(m, "project").is_some() && blank_key(m, "file") {
        ck.entry(
            loc,
            n.span,
            "config must specify the file where to fetch the config from",
        );
    }
    if let Some(i) = present(m, "integrity") {
        if blank_key(m, "remote") {
            ck.entry(
                loc,
                i.span,
                "config integrity can only be specified for remote includes",
            );
        }
        match i.as_str().and_then(|s| s.strip_prefix("sha256-")) {
            None => ck.entry(loc, i.span, "config integrity hash must start with 'sha256-'"),
            Some(h) => {
                if !is_strict_base64(h) {
                    ck.entry(loc, i.span, "config integrity hash must be base64 encoded");
                }
            }
        }
    }
    if let Some(r) = present(m, "rules") {
        if !r.as_seq().is_some_and(|s| s.iter().all(|i| i.as_map().is_some())) {
            ck.entry(loc, r.span, "rules should be an array of hashes");
        } else {
            include_rules(ck, &at(loc, "rules"), r);
        }
    }
    if let Some(i) = present(m, "inputs")
        && i.as_map().is_none()
    {
        ck.entry(&at(loc, "inputs"), i.span, "config should be a hash");
    }
}

/// `Base64.strict_decode64` accepts it.
fn is_strict_base64(s: &str) -> bool {
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return s.is_empty();
    }
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

/// `Entry::Include::Rules` / `Include::Rules::Rule`.
fn include_rules(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(items) = n.as_seq() else { return };
    let rloc = at(loc, "rule");
    for r in items {
        let Some(m) = r.as_map() else {
            ck.entry(&rloc, r.span, "config should be a hash");
            continue;
        };
        if m.is_empty() {
            ck.entry(&rloc, r.span, "config can't be blank");
        }
        check_keys(ck, &rloc, r, m, &["if", "exists", "when", "changes"]);
        if let Some(i) = present(m, "if")
            && i.as_str().is_none_or(|s| expression_problem(s).is_some())
        {
            ck.entry(&rloc, i.span, "if invalid expression syntax");
        }
        if let Some(w) = present(m, "when") {
            let s = ruby_s(w);
            if s != "never" && s != "always" {
                ck.entry(&rloc, w.span, format!("when unknown value: {s}"));
            }
        }
        if let Some(e) = present(m, "exists") {
            exists(ck, &at(&rloc, "exists"), e, false);
        }
        if let Some(c) = present(m, "changes") {
            changes(ck, &at(&rloc, "changes"), c);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry::Release (+ Release::Assets, Assets::Links, Assets::Link) — lib/gitlab/ci/config/entry/release.rb, release/assets*.rb
// ---------------------------------------------------------------------------------------

/// A commit SHA or a name `Gitlab::GitRefValidator` (git's `check-ref-format`) accepts.
fn valid_git_ref(s: &str) -> bool {
    if s.len() >= 7 && s.len() <= 40 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        return true;
    }
    !s.is_empty()
        && !s.starts_with('-')
        && !s.starts_with('/')
        && !s.ends_with('/')
        && !s.ends_with('.')
        && !s.ends_with(".lock")
        && !s.contains("..")
        && !s.contains("//")
        && !s.contains("@{")
        && s != "@"
        && !s.split('/').any(|c| c.starts_with('.'))
        && !s.chars().any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
}

/// `Entry::Release` (`lib/gitlab/ci/config/entry/release.rb`, `release/assets*.rb`).
fn release(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    check_keys(
        ck,
        loc,
        n,
        m,
        &[
            "tag_name",
            "tag_message",
            "name",
            "description",
            "ref",
            "released_at",
            "milestones",
            "assets",
        ],
    );
    // `validates :tag_name, type: String, presence: true`: both fire on a missing value.
    for (key, attr) in [("tag_name", "tag name"), ("description", "description")] {
        presence(ck, loc, n, m, key, attr);
        if !m.get(key).is_some_and(is_string) {
            let span = m.get(key).map_or(n.span, |v| v.span);
            ck.entry(loc, span, format!("{attr} should be a string"));
        }
    }
    if let Some(t) = m.get("tag_message").filter(|t| !blank(t))
        && !is_string(t)
    {
        ck.entry(loc, t.span, "tag message should be a string");
    }
    if let Some(r) = present(m, "ref")
        && !r.as_str().is_some_and(valid_git_ref)
    {
        ck.entry(loc, r.span, "ref must be a valid ref");
    }
    array_of_strings_or_string(ck, loc, m, "milestones", "milestones");
    if let Some(r) = present(m, "released_at") {
        let ok = r.as_str().is_some_and(|s| {
            regex::Regex::new(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
                .is_ok_and(|re| re.is_match(s))
        });
        if !ok {
            ck.entry(loc, r.span, "released at must be a valid datetime");
        }
    }
    if let Some(a) = present(m, "assets") {
        let aloc = at(loc, "assets");
        let Some(am) = expect_map(ck, &aloc, a) else {
            return;
        };
        check_keys(ck, &aloc, a, am, &["links"]);
        let lloc = at(&aloc, "links");
        match am.get("links") {
            Some(l) if l.as_seq().is_some_and(|s| !s.is_empty()) => {
                let kloc = at(&lloc, "link");
                for link in l.as_seq().unwrap_or_default() {
                    let Some(lm) = expect_map(ck, &kloc, link) else {
                        continue;
                    };
                    check_keys(
                        ck,
                        &kloc,
                        link,
                        lm,
                        &["name", "url", "filepath", "direct_asset_path", "link_type"],
                    );
                    if presence(ck, &kloc, link, lm, "name", "name") {
                        type_string(ck, &kloc, lm, "name", "name");
                    }
                    if presence(ck, &kloc, link, lm, "url", "url") {
                        type_string(ck, &kloc, lm, "url", "url");
                    }
                }
            }
            Some(l) if l.as_seq().is_some() => ck.entry(&lloc, l.span, "config can't be blank"),
            Some(l) => ck.entry(&lloc, l.span, "config should be an array of hashes"),
            None => ck.entry(&aloc, a.span, "links can't be blank"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry::IdToken, EE Entry::Secret (+ Vault/Azure/GCP/AWS), Entry::Pages, DastConfiguration —
// lib/gitlab/ci/config/entry/id_token.rb, pages.rb, publish.rb; ee/lib/gitlab/ci/config/entry/secret.rb, vault/secret.rb,
// azure_key_vault/secret.rb, gcp_secret_manager/secret.rb, dast_configuration.rb
// ---------------------------------------------------------------------------------------

fn id_tokens(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    for (name, tok) in m.iter() {
        let tloc = at(loc, name);
        let Some(tm) = expect_map(ck, &tloc, tok) else {
            continue;
        };
        required_keys(ck, &tloc, tok, tm, &["aud"]);
        check_keys(ck, &tloc, tok, tm, &["aud"]);
        array_of_strings_or_string(ck, &tloc, tm, "aud", "aud");
    }
}

fn secrets(ck: &mut Checker, loc: &str, n: &Node) {
    const PROVIDERS: &[&str] = &[
        "vault",
        "azure_key_vault",
        "gcp_secret_manager",
        "akeyless",
        "gitlab_secrets_manager",
        "aws_secrets_manager",
    ];
    let Some(m) = expect_map(ck, loc, n) else { return };
    for (name, sec) in m.iter() {
        let sloc = at(loc, name);
        let Some(sm) = expect_map(ck, &sloc, sec) else {
            continue;
        };
        let mut keys: Vec<&str> = PROVIDERS.to_vec();
        keys.extend(["file", "token"]);
        check_keys(ck, &sloc, sec, sm, &keys);
        let used: Vec<&str> = PROVIDERS.iter().copied().filter(|p| sm.contains_key(p)).collect();
        if used.len() != 1 {
            ck.entry(
                &sloc,
                sec.span,
                format!(
                    "config must use exactly one of these keys: {}",
                    PROVIDERS.join(", ")
                ),
            );
        }
        boolean(ck, &sloc, sm, "file", "file");
        type_string(ck, &sloc, sm, "token", "token");
        if let Some(v) = sm.get("vault") {
            vault(ck, &at(&sloc, "vault"), v);
        }
        if let Some(a) = sm.get("azure_key_vault") {
            named_secret(ck, &at(&sloc, "azure_key_vault"), a, &["name", "version"]);
        }
        if let Some(g) = sm.get("gcp_secret_manager") {
            named_secret(ck, &at(&sloc, "gcp_secret_manager"), g, &["name", "version"]);
            if blank_key(sm, "token") {
                ck.entry(&sloc, sec.span, "token is required with gcp secrets manager");
            }
        }
        if let Some(a) = sm.get("aws_secrets_manager")
            && !is_string(a)
        {
            named_secret(
                ck,
                &at(&sloc, "aws_secrets_manager"),
                a,
                &[
                    "secret_id",
                    "version_id",
                    "version_stage",
                    "region",
                    "role_arn",
                    "role_session_name",
                    "field",
                ],
            );
        }
    }
}

/// `Entry::Vault::Secret`: `path/field@engine` string or `{engine: {name, path}, path, field}`.
fn vault(ck: &mut Checker, loc: &str, n: &Node) {
    match &n.value {
        Value::Str(s) => {
            if s.trim().is_empty() {
                ck.entry(loc, n.span, "config can't be blank");
            }
        }
        Value::Map(m) => {
            check_keys(ck, loc, n, m, &["engine", "path", "field"]);
            required_keys(ck, loc, n, m, &["engine", "path", "field"]);
            type_string(ck, loc, m, "path", "path");
            type_string(ck, loc, m, "field", "field");
            if let Some(e) = present(m, "engine") {
                let eloc = at(loc, "engine");
                if let Some(em) = expect_map(ck, &eloc, e) {
                    check_keys(ck, &eloc, e, em, &["name", "path"]);
                    required_keys(ck, &eloc, e, em, &["name", "path"]);
                    type_string(ck, &eloc, em, "name", "name");
                    type_string(ck, &eloc, em, "path", "path");
                }
            }
        }
        _ => ck.entry(loc, n.span, "should be a hash or a string"),
    }
}

/// Azure / GCP / AWS secret hashes: `name` required (GCP: `version` string or integer).
fn named_secret(ck: &mut Checker, loc: &str, n: &Node, keys: &[&str]) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    check_keys(ck, loc, n, m, keys);
    let required = if keys.contains(&"secret_id") {
        "secret_id"
    } else {
        "name"
    };
    if presence(ck, loc, n, m, required, &humanize(required)) {
        type_string(ck, loc, m, required, &humanize(required));
    }
    if let Some(v) = present(m, "version")
        && !is_alnum(v)
    {
        ck.entry(loc, v.span, "version should be a string or an integer");
    }
}

/// `Entry::Pages`: `true`/`false` or `{path_prefix, expire_in, publish}`.
fn pages(ck: &mut Checker, loc: &str, n: &Node) {
    match &n.value {
        Value::Bool(_) => {}
        Value::Map(m) => {
            check_keys(ck, loc, n, m, &["path_prefix", "expire_in", "publish"]);
            type_string(ck, loc, m, "path_prefix", "path prefix");
            type_string(ck, loc, m, "publish", "publish");
            if let Some(e) = present(m, "expire_in") {
                duration(ck, loc, "expire in", e, None, true);
            }
        }
        _ => ck.entry(loc, n.span, "config should be a hash or a boolean value"),
    }
}

/// EE `Entry::DastConfiguration`.
fn dast_configuration(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    check_keys(ck, loc, n, m, &["site_profile", "scanner_profile"]);
    type_string(ck, loc, m, "site_profile", "site profile");
    type_string(ck, loc, m, "scanner_profile", "scanner profile");
}

// ---------------------------------------------------------------------------------------
// Entry::Inherit (+ Inherit::Default, Inherit::Variables) — lib/gitlab/ci/config/entry/inherit.rb, inherit/default.rb,
// inherit/variables.rb
// ---------------------------------------------------------------------------------------

/// `Entry::Default::ALLOWED_KEYS` (what `inherit:default` may list).
const DEFAULT_KEYS: &[&str] = &[
    "before_script",
    "after_script",
    "hooks",
    "cache",
    "image",
    "services",
    "interruptible",
    "timeout",
    "retry",
    "tags",
    "artifacts",
    "id_tokens",
];

fn inherit(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    check_keys(ck, loc, n, m, &["default", "variables"]);
    if let Some(d) = present(m, "default") {
        let dloc = at(loc, "default");
        match &d.value {
            Value::Bool(_) => {}
            Value::Seq(items) => {
                if !is_array_of_strings(d) {
                    ck.entry(&dloc, d.span, "config should be an array of strings");
                }
                let unknown: Vec<String> = items
                    .iter()
                    .map(ruby_s)
                    .filter(|s| !DEFAULT_KEYS.contains(&s.as_str()))
                    .collect();
                if !unknown.is_empty() {
                    ck.entry(
                        &dloc,
                        d.span,
                        format!("config contains unknown values: {}", unknown.join(", ")),
                    );
                }
            }
            _ => ck.entry(&dloc, d.span, "should be a bool or array of strings"),
        }
    }
    if let Some(v) = present(m, "variables") {
        let vloc = at(loc, "variables");
        match &v.value {
            Value::Bool(_) => {}
            Value::Seq(_) if !is_array_of_strings(v) => {
                ck.entry(&vloc, v.span, "config should be an array of strings")
            }
            Value::Seq(_) => {}
            _ => ck.entry(&vloc, v.span, "should be a bool or array of strings"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry::Default, Entry::Workflow, Entry::AutoCancel — lib/gitlab/ci/config/entry/default.rb, workflow.rb, auto_cancel.rb
// ---------------------------------------------------------------------------------------

/// `Entry::Default` (`default:`).
pub(crate) fn default(ck: &mut Checker, node: &Node) {
    let loc = "default";
    let Some(m) = expect_map(ck, loc, node) else {
        return;
    };
    check_keys(ck, loc, node, m, DEFAULT_KEYS);
    for key in ["before_script", "after_script"] {
        if let Some(n) = present(m, key) {
            commands(ck, &at(loc, key), n);
        }
    }
    if let Some(n) = present(m, "interruptible") {
        boolean_entry(ck, &at(loc, "interruptible"), n);
    }
    inheritable_keywords(ck, loc, m);
    if let Some(n) = present(m, "id_tokens") {
        id_tokens(ck, &at(loc, "id_tokens"), n);
    }
}

/// `Entry::Workflow` (`workflow:`).
pub(crate) fn workflow(ck: &mut Checker, node: &Node) {
    let loc = "workflow";
    let Some(m) = expect_map(ck, loc, node) else {
        return;
    };
    check_keys(ck, loc, node, m, &["rules", "name", "auto_cancel"]);
    if let Some(n) = present(m, "name") {
        let len = n.scalar_to_string().map(|s| s.chars().count()).unwrap_or(1);
        if len < 1 {
            ck.entry(loc, n.span, "name is too short (minimum is 1 character)");
        } else if len > 255 {
            ck.entry(loc, n.span, "name is too long (maximum is 255 characters)");
        }
    }
    if let Some(r) = present(m, "rules") {
        rules(
            ck,
            &at(loc, "rules"),
            r,
            &["always", "never"],
            &[
                "if",
                "changes",
                "exists",
                "when",
                "start_in",
                "allow_failure",
                "variables",
                "needs",
                "auto_cancel",
            ],
            &["job"],
        );
    }
    if let Some(a) = present(m, "auto_cancel") {
        auto_cancel(ck, &at(loc, "auto_cancel"), a);
    }
}

/// `Entry::AutoCancel`.
fn auto_cancel(ck: &mut Checker, loc: &str, n: &Node) {
    let Some(m) = expect_map(ck, loc, n) else { return };
    check_keys(ck, loc, n, m, &["on_new_commit", "on_job_failure"]);
    for (key, attr, allowed) in [
        (
            "on_new_commit",
            "on new commit",
            &["conservative", "interruptible", "none"][..],
        ),
        ("on_job_failure", "on job failure", &["none", "all"][..]),
    ] {
        let Some(v) = present(m, key) else { continue };
        if !is_string(v) {
            ck.entry(loc, v.span, format!("{attr} should be a string"));
        }
        if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
            ck.entry(
                loc,
                v.span,
                format!("{attr} must be one of: {}", allowed.join(", ")),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry::Variables, Entry::Variable, Entry::Stages — lib/gitlab/ci/config/entry/variables.rb, variable.rb, stages.rb
// ---------------------------------------------------------------------------------------

/// `Entry::Variables` at the root (`root == true`, allows `description`, `options`,
/// `expand`) or in a job.
pub(crate) fn variables(ck: &mut Checker, loc: &str, node: &Node, root: bool) {
    let allowed: &[&str] = if root {
        &["value", "description", "expand", "options"]
    } else {
        &["value", "expand"]
    };
    variables_with(ck, loc, node, Some(allowed));
}

/// `Entry::Variables` with the `allowed_value_data` metadata (`None`: only simple values,
/// as in `rules:variables`).
fn variables_with(ck: &mut Checker, loc: &str, node: &Node, allowed: Option<&[&str]>) {
    let Some(m) = expect_map(ck, loc, node) else {
        return;
    };
    for (key, v) in m.iter_spanned().map(|(k, _, v)| (k, v)) {
        let vloc = at(loc, key);
        match &v.value {
            Value::Str(_) | Value::Int(_) => {}
            Value::Map(vm) => complex_variable(ck, &vloc, v, vm, allowed),
            Value::Null => complex_variable(ck, &vloc, v, &Mapping::new(), allowed),
            _ => ck.verbatim(
                Some(v.span),
                "variable definition must be either a string or a hash",
            ),
        }
    }
}

/// `Variable::ComplexVariable`.
fn complex_variable(ck: &mut Checker, loc: &str, n: &Node, m: &Mapping, allowed: Option<&[&str]>) {
    if let Some(v) = present(m, "value")
        && !is_alnum(v)
    {
        ck.entry(loc, v.span, "config value must be an alphanumeric string");
    }
    if let Some(d) = present(m, "description")
        && !is_alnum(d)
    {
        ck.entry(loc, d.span, "config description must be an alphanumeric string");
    }
    if let Some(e) = present(m, "expand")
        && !is_bool(e)
    {
        ck.entry(loc, e.span, "config expand should be a boolean value");
    }
    let options = present(m, "options");
    if let Some(o) = options
        && !is_array_of_strings(o)
    {
        ck.entry(loc, o.span, "config options should be an array of strings");
    }
    match allowed {
        Some(a) if !a.is_empty() => {
            let extra: Vec<&str> = m.keys().filter(|k| !a.contains(k)).collect();
            if !extra.is_empty() {
                let span = m.key_span(extra[0]).unwrap_or(n.span);
                ck.entry(
                    loc,
                    span,
                    format!("config uses invalid data keys: {}", extra.join(", ")),
                );
            }
        }
        _ => ck.entry(loc, n.span, "config must be a string"),
    }
    if let Some(opts) = options.and_then(Node::as_seq)
        && !opts.is_empty()
    {
        let value = m.get("value").and_then(Node::scalar_to_string);
        let found = value
            .as_deref()
            .is_some_and(|v| opts.iter().any(|o| o.as_str() == Some(v)));
        if !found {
            ck.entry(loc, n.span, "config value must be present in options");
        }
    }
}

/// `Entry::Stages` (`stages:` and its deprecated alias `types:`).
pub(crate) fn stages(ck: &mut Checker, loc: &str, node: &Node) {
    let ok = node
        .as_seq()
        .is_some_and(|s| s.iter().all(|i| is_nested_strings(i, 9)));
    if !ok {
        ck.entry(
            loc,
            node.span,
            "config should be an array of strings or a nested array of strings up to 10 levels deep",
        );
    }
}

/// `Entry::Includes` / `Entry::Include` (`include:` shape only; fetching is elsewhere).
pub(crate) fn include(ck: &mut Checker, loc: &str, node: &Node) {
    includes(ck, loc, node, None);
}

// ---------------------------------------------------------------------------------------
// run: (`app/validators/json_schemas/run_steps.json`)
// ---------------------------------------------------------------------------------------

/// `validates :run, json_schema: { filename: 'run_steps', detail_errors: true }` against
/// `app/validators/json_schemas/run_steps.json`: an array of steps; a step is either a script
/// (`name`, `script`, `env`) or a function call (`name`, exactly one of `step`/`func`/`action`,
/// `env`, `inputs`); names and env/input keys are identifiers; a git reference needs `url`
/// and `rev`, an OCI reference `registry`, `repository` and `tag`. Messages use
/// json_schemer's wording (as GitLab's `detail_errors` does); GitLab may report a different
/// subset of the errors of a failing `oneOf`.
fn run_steps(ck: &mut Checker, job_loc: &str, n: &Node) {
    const IDENT: &str = "^[a-zA-Z_][a-zA-Z0-9_]*$";
    let ident = |s: &str| {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
    };
    let mut err = |span, msg: String| ck.entry(job_loc, span, format!("run {msg}"));
    let Some(steps) = n.as_seq() else {
        err(n.span, "value at root is not an array".to_string());
        return;
    };
    for (i, s) in steps.iter().enumerate() {
        let Some(m) = s.as_map() else {
            err(s.span, format!("value at `/{i}` is not an object"));
            continue;
        };
        let script = m.contains_key("script");
        let allowed: &[&str] = if script {
            &["name", "env", "script"]
        } else {
            &["name", "env", "inputs", "step", "func", "action"]
        };
        for (k, v) in m.iter() {
            if !allowed.contains(&k) {
                err(
                    v.span,
                    format!("object property at `/{i}/{k}` is a disallowed additional property"),
                );
            }
        }
        match m.get("name") {
            None => err(
                s.span,
                format!("object at `/{i}` is missing required properties: name"),
            ),
            Some(v) => match v.as_str() {
                None => err(v.span, format!("value at `/{i}/name` is not a string")),
                Some(name) if !ident(name) => err(
                    v.span,
                    format!("string at `/{i}/name` does not match pattern: {IDENT}"),
                ),
                Some(_) => {}
            },
        }
        if let Some(sc) = m.get("script") {
            match sc.as_str() {
                None => err(sc.span, format!("value at `/{i}/script` is not a string")),
                Some("") => err(sc.span, format!("string length at `/{i}/script` is less than: 1")),
                Some(_) => {}
            }
        } else {
            let calls: Vec<&str> = ["step", "func", "action"]
                .into_iter()
                .filter(|k| m.contains_key(k))
                .collect();
            if calls.len() != 1 {
                err(
                    s.span,
                    format!("value at `/{i}` does not match exactly one `oneOf` schema"),
                );
            }
            for key in ["step", "func"] {
                let Some(r) = m.get(key) else { continue };
                let ok = match &r.value {
                    Value::Str(_) => true,
                    Value::Map(rm) => {
                        let refs = |name: &str, required: &[&str], optional: &[&str]| {
                            rm.len() == 1
                                && rm.get(name).and_then(Node::as_map).is_some_and(|g| {
                                    required.iter().all(|k| g.get(k).is_some_and(is_string))
                                        && g.iter().all(|(k, v)| {
                                            (required.contains(&k) || optional.contains(&k)) && is_string(v)
                                        })
                                })
                        };
                        refs("git", &["url", "rev"], &["dir", "file"])
                            || refs("oci", &["registry", "repository", "tag"], &["dir", "file"])
                    }
                    _ => false,
                };
                if !ok {
                    err(
                        r.span,
                        format!("value at `/{i}/{key}` does not match exactly one `oneOf` schema"),
                    );
                }
            }
            if let Some(a) = m.get("action")
                && !is_string(a)
            {
                err(a.span, format!("value at `/{i}/action` is not a string"));
            }
        }
        for key in ["env", "inputs"] {
            let Some(v) = m.get(key) else { continue };
            if key == "inputs" && script {
                continue;
            }
            let Some(vm) = v.as_map() else {
                err(v.span, format!("value at `/{i}/{key}` is not an object"));
                continue;
            };
            for (k, x) in vm.iter() {
                if !ident(k) {
                    err(
                        x.span,
                        format!("object property at `/{i}/{key}/{k}` is a disallowed additional property"),
                    );
                } else if key == "env" && !is_string(x) {
                    err(x.span, format!("value at `/{i}/{key}/{k}` is not a string"));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "entries_tests.rs"]
mod tests;
