//! `cargo xtask module-graph`: which of the host's top-level modules each
//! one uses (`crate::…` paths outside test code), and any cycle among
//! them. The host is meant to be a tree with `config` near the top and the
//! stages below it; this shows whether it still is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Prints the graph and the cycles; fails if there is a cycle.
pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let graph = graph(&root.join("host/src"))?;
    for (module, uses) in &graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        println!("{module} -> {}", uses.join(" "));
    }
    let cycles = cycles(&graph);
    if cycles.is_empty() {
        println!("\nno cycles");
        Ok(())
    } else {
        for cycle in &cycles {
            println!("cycle: {}", cycle.join(" -> "));
        }
        anyhow::bail!("{} module cycles", cycles.len())
    }
}

/// Each top-level module of `src` (a file or a folder), and the top-level
/// modules its non-test code names with `crate::`.
fn graph(src: &Path) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(src)? {
        let path = entry?.path();
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if matches!(name.as_str(), "lib" | "main")
            || (path.is_file() && path.extension().is_none_or(|e| e != "rs"))
        {
            continue;
        }
        let mut uses = BTreeSet::new();
        for file in rust_files(&path)? {
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file)?;
            // Test modules come last in a file; their uses do not count.
            let code = text.split("\n#[cfg(test)]").next().unwrap_or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let used: String = line[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !used.is_empty() && used != name {
                        uses.insert(used);
                    }
                }
            }
        }
        graph.insert(name, uses);
    }
    Ok(graph)
}

fn rust_files(path: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}

/// Every cycle, each once, starting at its smallest module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        let last = path.last().expect("a path has a start").clone();
        for next in graph.get(&last).into_iter().flatten() {
            if let Some(at) = path.iter().position(|m| m == next) {
                let mut cycle = path[at..].to_vec();
                let smallest = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap_or(0);
                cycle.rotate_left(smallest);
                cycle.push(cycle[0].clone());
                found.insert(cycle);
            } else if path.len() < graph.len() {
                path.push(next.clone());
                walk(graph, path, found);
                path.pop();
            }
        }
    }
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        walk(graph, &mut vec![start.clone()], &mut found);
    }
    found
}
