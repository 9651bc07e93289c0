//! Times the `rules:if` expression language at pipeline scale: parse (validation) and
//! evaluation of the rules of a 2,000-job pipeline against about 70 predefined
//! variables. Run through `bench/expr-rules.sh`.

use std::collections::HashMap;
use std::time::Instant;

use podci_model::expr::Expression;

const JOBS: usize = 2_000;

fn main() {
    let mut vars: HashMap<String, String> = (0..60)
        .map(|i| (format!("CI_EXTRA_{i}"), format!("value-{i}")))
        .collect();
    for (k, v) in [
        ("CI_COMMIT_BRANCH", "feature/login-page"),
        ("CI_COMMIT_REF_NAME", "feature/login-page"),
        ("CI_DEFAULT_BRANCH", "main"),
        ("CI_PIPELINE_SOURCE", "merge_request_event"),
        ("CI_MERGE_REQUEST_LABELS", "backend,needs-review"),
        ("CI_COMMIT_MESSAGE", "Fix the login page\n\n[skip docs]"),
        ("DEPLOY_PATTERN", "/^(main|release\\/.*)$/"),
        ("SERVICES", "api web worker"),
    ] {
        vars.insert(k.to_owned(), v.to_owned());
    }

    let templates = [
        r#"$CI_PIPELINE_SOURCE == "merge_request_event" && $CI_MERGE_REQUEST_LABELS =~ /backend/"#,
        r#"$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH || $CI_COMMIT_TAG =~ /^v\d+\.\d+\.\d+$/"#,
        r#"$CI_COMMIT_BRANCH =~ $DEPLOY_PATTERN && $CI_COMMIT_MESSAGE !~ /\[skip deploy\]/i"#,
        r#"($SERVICE_{i} && "api" =~ $SERVICES) || $FORCE_ALL != null"#,
    ];
    let sources: Vec<String> = (0..JOBS)
        .flat_map(|job| templates.iter().map(move |t| t.replace("{i}", &job.to_string())))
        .collect();

    let start = Instant::now();
    let parsed: Vec<Expression> = sources.iter().filter_map(|s| Expression::parse(s).ok()).collect();
    let parse_time = start.elapsed();
    assert_eq!(parsed.len(), sources.len(), "every benchmark rule is valid");

    let start = Instant::now();
    let reparsed = sources.iter().filter(|s| Expression::parse(s).is_ok()).count();
    let reparse_time = start.elapsed();
    assert_eq!(reparsed, sources.len());

    let start = Instant::now();
    let truthy = parsed.iter().filter(|e| e.is_truthy(&vars)).count();
    let first_eval = start.elapsed();
    let start = Instant::now();
    let truthy_again = parsed.iter().filter(|e| e.is_truthy(&vars)).count();
    let second_eval = start.elapsed();
    assert_eq!(truthy, truthy_again);

    println!(
        "rules:            {} ({} jobs x {})",
        parsed.len(),
        JOBS,
        templates.len()
    );
    println!("parse+validate:   {:.2} ms", parse_time.as_secs_f64() * 1e3);
    println!(
        "parse again:      {:.2} ms (patterns already compiled)",
        reparse_time.as_secs_f64() * 1e3
    );
    println!(
        "evaluate (1st):   {:.2} ms ({truthy} true)",
        first_eval.as_secs_f64() * 1e3
    );
    println!("evaluate (2nd):   {:.2} ms", second_eval.as_secs_f64() * 1e3);
    println!(
        "total per pipeline: {:.2} ms",
        (parse_time + first_eval).as_secs_f64() * 1e3
    );
}
