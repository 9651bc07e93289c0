//! Layout of the pipeline graph for the page: which job card goes in which column, in
//! which order, and which needs links join them.
//!
//! This is view logic (the issue allows it in the bindings): two views like GitLab's,
//! stage columns, and "job dependencies" layers where a job sits one column right of the
//! furthest job it needs (`needs: []` in the first column; a job without `needs` waits for
//! every job of the earlier stages). Cards are grouped by configured job, so `parallel`
//! and matrix instances make one card with a count. Pixel positions are left to the page,
//! which measures the cards it draws.

use std::collections::HashMap;

use podci_model::Pipeline;
use serde::Serialize;

/// Which view to lay out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One column per stage, as GitLab's default pipeline graph.
    Stages,
    /// One column per dependency layer ("Group jobs by: Job dependencies").
    Needs,
}

impl Mode {
    /// Parses `"stages"` or `"needs"`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "stages" | "stage" => Some(Mode::Stages),
            "needs" | "dag" | "dependencies" => Some(Mode::Needs),
            _ => None,
        }
    }
}

/// One card: a configured job with all its instances.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Card {
    /// The configured job name (also the card's id).
    pub name: String,
    /// Its stage.
    pub stage: String,
    /// Instance names (`job 1/3`, `job: [a]`, or just the name).
    pub instances: Vec<String>,
    /// The cards this one needs (explicit `needs:` that name a job of this pipeline).
    pub needs: Vec<String>,
    /// Line of the job's definition, for jumping to it in the editor.
    pub line: u32,
}

/// A column of cards.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Column {
    /// Stage name, or `Layer N` in the needs view.
    pub title: String,
    /// Cards top to bottom.
    pub cards: Vec<Card>,
}

/// A needs link from the needed card to the card that needs it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Link {
    /// The needed job.
    pub from: String,
    /// The job that needs it.
    pub to: String,
}

/// The laid-out graph.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Layout {
    /// `stages` or `needs`.
    pub mode: &'static str,
    /// Columns left to right.
    pub columns: Vec<Column>,
    /// Needs links.
    pub links: Vec<Link>,
}

/// Lays out the pipeline's jobs for `mode`.
pub fn layout(p: &Pipeline, mode: Mode) -> Layout {
    // Need names may be job names or instance names (`needs: ["build 1/2"]`).
    let mut card_of: HashMap<&str, usize> = HashMap::with_capacity(p.jobs.len() * 2);
    for (i, j) in p.jobs.iter().enumerate() {
        for inst in &j.instances {
            card_of.entry(inst.as_str()).or_insert(i);
        }
    }
    for (i, j) in p.jobs.iter().enumerate() {
        card_of.insert(j.name.as_str(), i);
    }
    let stage_index: HashMap<&str, usize> = p
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let job_stage: Vec<usize> = p
        .jobs
        .iter()
        .map(|j| stage_index.get(j.stage.as_str()).copied().unwrap_or(usize::MAX))
        .collect();
    let needs: Vec<Option<Vec<usize>>> = p
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            j.needs.as_ref().map(|n| {
                let mut v: Vec<usize> = Vec::with_capacity(n.len());
                for need in n.iter().filter(|n| !n.external) {
                    if let Some(&k) = card_of.get(need.job.as_str())
                        && k != i
                        && !v.contains(&k)
                    {
                        v.push(k);
                    }
                }
                v
            })
        })
        .collect();

    let cards: Vec<Card> = p
        .jobs
        .iter()
        .zip(&needs)
        .map(|(j, n)| Card {
            name: j.name.clone(),
            stage: j.stage.clone(),
            instances: j.instances.clone(),
            needs: n.iter().flatten().map(|&k| p.jobs[k].name.clone()).collect(),
            line: j.span.line,
        })
        .collect();
    let links: Vec<Link> = cards
        .iter()
        .flat_map(|c| {
            c.needs.iter().map(|n| Link {
                from: n.clone(),
                to: c.name.clone(),
            })
        })
        .collect();

    let (column_of, titles): (Vec<usize>, Vec<String>) = match mode {
        Mode::Stages => {
            // Only stages that have jobs get a column, as on GitLab.
            let mut used: Vec<usize> = job_stage.clone();
            used.sort_unstable();
            used.dedup();
            let col: HashMap<usize, usize> = used.iter().enumerate().map(|(c, &s)| (s, c)).collect();
            let titles = used
                .iter()
                .map(|&s| p.stages.get(s).cloned().unwrap_or_else(|| "?".to_string()))
                .collect();
            (
                job_stage
                    .iter()
                    .map(|s| col.get(s).copied().unwrap_or(0))
                    .collect(),
                titles,
            )
        }
        Mode::Needs => {
            let layers = dependency_layers(&job_stage, &needs);
            let n = layers.iter().copied().max().map_or(0, |m| m + 1);
            (layers, (1..=n).map(|i| format!("Layer {i}")).collect())
        }
    };

    let mut columns: Vec<Vec<usize>> = vec![Vec::new(); titles.len()];
    for (i, &c) in column_of.iter().enumerate() {
        if let Some(col) = columns.get_mut(c) {
            col.push(i);
        }
    }
    if mode == Mode::Needs {
        order_by_barycenter(&mut columns, &needs);
    }
    let mut slots: Vec<Option<Card>> = cards.into_iter().map(Some).collect();
    let columns = columns
        .into_iter()
        .zip(titles)
        .map(|(ids, title)| Column {
            title,
            cards: ids.into_iter().filter_map(|i| slots[i].take()).collect(),
        })
        .collect();
    Layout {
        mode: match mode {
            Mode::Stages => "stages",
            Mode::Needs => "needs",
        },
        columns,
        links,
    }
}

/// Layer of each job: 0 for `needs: []` (and stage-ordered jobs of the first stage),
/// else one more than the furthest job it waits for.
fn dependency_layers(job_stage: &[usize], needs: &[Option<Vec<usize>>]) -> Vec<usize> {
    let n = job_stage.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| job_stage[i]);
    let mut layer = vec![0usize; n];
    // Needs may point to a later job of the same stage; a few passes settle those. Cycles
    // are validation errors, and the pass limit keeps the layout finite for them too.
    for _ in 0..4 {
        let mut changed = false;
        let mut max_before_stage = 0usize;
        let mut max_in_stage: Option<usize> = None;
        let mut current_stage = usize::MAX;
        let mut any_before = false;
        for &i in &order {
            if job_stage[i] != current_stage {
                if let Some(m) = max_in_stage {
                    max_before_stage = if any_before { max_before_stage.max(m) } else { m };
                    any_before = true;
                }
                max_in_stage = None;
                current_stage = job_stage[i];
            }
            let l = match &needs[i] {
                Some(ns) => ns.iter().map(|&k| layer[k] + 1).max().unwrap_or(0),
                None if any_before => max_before_stage + 1,
                None => 0,
            };
            let l = l.min(n);
            if l != layer[i] {
                layer[i] = l;
                changed = true;
            }
            max_in_stage = Some(max_in_stage.map_or(l, |m| m.max(l)));
        }
        if !changed {
            break;
        }
    }
    // Close gaps so that layers are numbered 0..k.
    let mut used: Vec<usize> = layer.clone();
    used.sort_unstable();
    used.dedup();
    let rank: HashMap<usize, usize> = used.iter().enumerate().map(|(r, &l)| (l, r)).collect();
    layer.iter().map(|l| rank.get(l).copied().unwrap_or(0)).collect()
}

/// Orders each column by the mean row of the cards it needs (fewer crossing links);
/// cards without needs keep their configuration order, ahead of the others.
fn order_by_barycenter(columns: &mut [Vec<usize>], needs: &[Option<Vec<usize>>]) {
    let mut row: HashMap<usize, usize> = HashMap::new();
    for col in columns.iter_mut() {
        let mut keyed: Vec<(f64, usize, usize)> = col
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                let placed: Vec<usize> = needs[i]
                    .iter()
                    .flatten()
                    .filter_map(|k| row.get(k).copied())
                    .collect();
                let key = if placed.is_empty() {
                    -1.0
                } else {
                    placed.iter().sum::<usize>() as f64 / placed.len() as f64
                };
                (key, pos, i)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        *col = keyed.into_iter().map(|(_, _, i)| i).collect();
        for (r, &i) in col.iter().enumerate() {
            row.insert(i, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podci_model::{LoadOptions, MemorySource, load};

    fn lint(y: &str) -> Pipeline {
        let p = load(".gitlab-ci.yml", y, &MemorySource::new(), &LoadOptions::default());
        assert!(p.is_valid(), "{:?}", p.diagnostics);
        p
    }

    fn names(l: &Layout) -> Vec<(String, Vec<String>)> {
        l.columns
            .iter()
            .map(|c| (c.title.clone(), c.cards.iter().map(|c| c.name.clone()).collect()))
            .collect()
    }

    const DAG: &str = "stages: [build, test, deploy]\n\
        lint: {stage: test, needs: [], script: x}\n\
        build-a: {stage: build, script: x}\n\
        build-b: {stage: build, script: x}\n\
        test-a: {stage: test, needs: [build-a], script: x}\n\
        test-b: {stage: test, needs: [build-b], script: x, parallel: 3}\n\
        deploy: {stage: deploy, needs: [test-a, test-b], script: x}\n\
        report: {stage: deploy, script: x}\n";

    #[test]
    fn stage_view_skips_empty_stages_and_groups_parallel() {
        let p = lint(DAG);
        let l = layout(&p, Mode::Stages);
        let n = names(&l);
        assert_eq!(n.len(), 3);
        assert_eq!(
            n[0],
            (
                "build".to_string(),
                vec!["build-a".to_string(), "build-b".to_string()]
            )
        );
        assert_eq!(n[1].1, vec!["lint", "test-a", "test-b"]);
        let tb = &l.columns[1].cards[2];
        assert_eq!(tb.instances, vec!["test-b 1/3", "test-b 2/3", "test-b 3/3"]);
        assert_eq!(l.links.len(), 4);
        assert!(l.links.contains(&Link {
            from: "test-b".into(),
            to: "deploy".into()
        }));
    }

    #[test]
    fn needs_view_layers() {
        let p = lint(DAG);
        let l = layout(&p, Mode::Needs);
        let n = names(&l);
        // lint and the build jobs have nothing to wait for; report waits for every job of
        // earlier stages, so it sits right of the furthest of them.
        assert_eq!(n[0].1, vec!["lint", "build-a", "build-b"]);
        assert_eq!(n[1].1, vec!["test-a", "test-b"]);
        // report has no explicit needs, so it heads its column.
        assert_eq!(n[2].1, vec!["report", "deploy"]);
        assert_eq!(n[2].0, "Layer 3");
    }

    #[test]
    fn barycenter_orders_by_needed_rows() {
        let p = lint(
            "a: {stage: build, script: x}\nb: {stage: build, script: x}\nc: {stage: test, needs: [b], script: x}\nd: {stage: test, needs: [a], script: x}\n",
        );
        let l = layout(&p, Mode::Needs);
        assert_eq!(names(&l)[1].1, vec!["d", "c"]);
    }

    #[test]
    fn matrix_need_on_instance_maps_to_card() {
        let p = lint(
            "build:\n  stage: build\n  script: x\n  parallel:\n    matrix:\n      - OS: [linux, mac]\ntest:\n  needs: [\"build: [linux]\"]\n  script: x\n",
        );
        let l = layout(&p, Mode::Needs);
        assert_eq!(
            l.links,
            vec![Link {
                from: "build".into(),
                to: "test".into()
            }]
        );
        assert_eq!(l.columns[0].cards[0].instances.len(), 2);
    }

    #[test]
    fn mode_parse() {
        assert_eq!(Mode::parse("needs"), Some(Mode::Needs));
        assert_eq!(Mode::parse("stages"), Some(Mode::Stages));
        assert_eq!(Mode::parse("x"), None);
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        /// Random DAGs (each job needs some earlier jobs, or follows stages): every card
        /// appears once, and in the needs view every link points to a later column.
        #[test]
        fn needs_layers_respect_every_link(
            jobs in proptest::collection::vec(
                (0usize..3, proptest::option::of(proptest::collection::vec(0usize..40, 0..4))),
                1..40,
            )
        ) {
            let stages = ["build", "test", "deploy"];
            // Stage of each job: never earlier than the jobs it needs (GitLab requires it).
            let mut stage_of: Vec<usize> = Vec::new();
            let mut y = String::from("stages: [build, test, deploy]\n");
            for (i, (stage, needs)) in jobs.iter().enumerate() {
                let needs: Option<Vec<usize>> = needs.as_ref().map(|n| {
                    let mut v: Vec<usize> = n.iter().filter(|&&k| k < i).copied().collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                });
                let st = needs
                    .iter()
                    .flatten()
                    .map(|&k| stage_of[k])
                    .fold(*stage, usize::max);
                stage_of.push(st);
                y.push_str(&format!("j{i}:\n  stage: {}\n  script: x\n", stages[st]));
                if let Some(n) = needs {
                    let names: Vec<String> = n.iter().map(|k| format!("j{k}")).collect();
                    y.push_str(&format!("  needs: [{}]\n", names.join(", ")));
                }
            }
            let p = load(".gitlab-ci.yml", &y, &MemorySource::new(), &LoadOptions::default());
            proptest::prop_assert!(p.is_valid(), "{:?}\n{}", p.diagnostics, y);
            for mode in [Mode::Needs, Mode::Stages] {
                let l = layout(&p, mode);
                let mut col: HashMap<String, usize> = HashMap::new();
                for (c, column) in l.columns.iter().enumerate() {
                    proptest::prop_assert!(!column.cards.is_empty());
                    for card in &column.cards {
                        proptest::prop_assert!(col.insert(card.name.clone(), c).is_none());
                    }
                }
                proptest::prop_assert_eq!(col.len(), jobs.len());
                for link in &l.links {
                    let (a, b) = (col[&link.from], col[&link.to]);
                    if mode == Mode::Needs {
                        proptest::prop_assert!(a < b, "{} -> {}: {a} !< {b}\n{}", link.from, link.to, y);
                    } else {
                        proptest::prop_assert!(a <= b);
                    }
                }
            }
        }
    }
}
