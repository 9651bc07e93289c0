//! Entry checks for every keyword, mirroring `Gitlab::Ci::Config::Entry::*`.
//!
//! Each function validates one entry's shape at `loc` (the entry's key path) and reports
//! through [`Checker::entry`] with GitLab's message text.
//! (Being written on the `validate` branch; these are the agreed signatures.)

#![allow(unused_variables)]

use super::Checker;
use crate::yaml::Node;

/// `Entry::Job` / `Entry::Bridge` (a job with `trigger:`): every key of one job.
/// `loc` is `jobs:<name>`.
pub(crate) fn job(ck: &mut Checker, loc: &str, name: &str, node: &Node) {}

/// `Entry::Default` (`default:`).
pub(crate) fn default(ck: &mut Checker, node: &Node) {}

/// `Entry::Workflow` (`workflow:`).
pub(crate) fn workflow(ck: &mut Checker, node: &Node) {}

/// `Entry::Variables` at the root (`root == true`, allows `description`, `options`,
/// `expand`) or in a job.
pub(crate) fn variables(ck: &mut Checker, loc: &str, node: &Node, root: bool) {}

/// `Entry::Stages` (`stages:` and its deprecated alias `types:`).
pub(crate) fn stages(ck: &mut Checker, loc: &str, node: &Node) {}

/// `Entry::Includes` / `Entry::Include` (`include:` shape only; fetching is elsewhere).
pub(crate) fn include(ck: &mut Checker, loc: &str, node: &Node) {}
