//! The `podci` binary: composes the podci crates behind one CLI.

fn main() {}
