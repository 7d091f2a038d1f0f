//! Layering: no import cycle among palisade's modules.
//!
//! Reads every file under `src/` and the paths it names (`crate::a::…`,
//! `super::…`), then checks two graphs for cycles:
//!
//! - top-level modules (`src/a.rs` or `src/a/`): `config` is a leaf, the
//!   server does not import its handler's caller, layers only depend
//!   downward;
//! - sibling files inside one module folder (`listen/handler.rs` and
//!   `listen/server.rs` must not name each other both ways).
//!
//! A cycle is reported with the files and the lines that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One file: its module path (`["listen", "handler"]`) and its text.
struct SourceFile {
    module: Vec<String>,
    path: PathBuf,
    text: String,
}

fn source_files(root: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read src folder") {
            let path = entry.expect("folder entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).expect("under src");
                let mut module: Vec<String> =
                    relative.with_extension("").iter().map(|c| c.to_string_lossy().into_owned()).collect();
                if module.last().is_some_and(|last| last == "mod") {
                    module.pop();
                }
                if module == ["lib"] || module == ["main"] {
                    module.clear();
                }
                let text = std::fs::read_to_string(&path).expect("read source");
                files.push(SourceFile { module, path, text });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The code of a line without its comment (good enough for `use` lines and paths).
fn code_of(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// Module paths a file names, with the line they are named on: each
/// `crate::a::b` and `super::x` path, resolved to an absolute path.
fn named_paths(file: &SourceFile) -> Vec<(Vec<String>, usize)> {
    let mut found = Vec::new();
    let mut in_tests = false;
    for (index, line) in file.text.lines().enumerate() {
        // Unit tests may reach anywhere; only the shipped code is layered.
        if line.trim_start().starts_with("#[cfg(test)]") {
            in_tests = true;
        }
        if in_tests {
            continue;
        }
        let code = code_of(line);
        for (anchor, base) in [("crate::", Vec::new()), ("super::", parent_of(&file.module, &file.path))] {
            let mut rest = code;
            while let Some(at) = rest.find(anchor) {
                let preceded_by_ident =
                    rest[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                let after = &rest[at + anchor.len()..];
                rest = after;
                if preceded_by_ident {
                    continue;
                }
                let mut path = base.clone();
                let mut tail = after;
                // Nested `super::super::`.
                while let Some(more) = tail.strip_prefix("super::") {
                    path.pop();
                    tail = more;
                }
                path.extend(
                    tail.split("::")
                        .map(|seg| seg.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>())
                        .take_while(|seg| !seg.is_empty()),
                );
                // `use super::{a, b}` names the parent itself.
                found.push((path, index + 1));
            }
        }
    }
    found
}

/// The module `super` means in a file: the parent of its module (a
/// `mod.rs` file's module is its folder, so `super` is the folder's parent).
fn parent_of(module: &[String], _path: &Path) -> Vec<String> {
    let mut parent = module.to_vec();
    parent.pop();
    parent
}

type Graph = BTreeMap<String, BTreeMap<String, (PathBuf, usize)>>;

fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).map(|edges| edges.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            match state.get(&next).copied() {
                Some(1) => {
                    let start = stack.iter().position(|n| *n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(&next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node)
            && let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

fn describe(cycle: &[String], graph: &Graph) -> String {
    let mut text = cycle.join(" -> ");
    for pair in cycle.windows(2) {
        if let Some((path, line)) = graph.get(&pair[0]).and_then(|edges| edges.get(&pair[1])) {
            text.push_str(&format!("\n  {} -> {}: {}:{line}", pair[0], pair[1], path.display()));
        }
    }
    text
}

#[test]
fn modules_form_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = source_files(&root);
    let known: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut top: Graph = BTreeMap::new();
    let mut siblings: Graph = BTreeMap::new();
    for file in &files {
        let Some(own_top) = file.module.first() else { continue };
        for (path, line) in named_paths(file) {
            // The longest prefix that is a module of its own file.
            let target = (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|prefix| known.contains(prefix));
            let Some(target) = target else { continue };
            let target_top = &target[0];
            if target_top != own_top {
                top.entry(own_top.clone()).or_default().entry(target_top.clone()).or_insert((file.path.clone(), line));
            }
            // Two files in the same folder, neither being the folder's own module.
            let same_folder = file.module.len() >= 2
                && target.len() == file.module.len()
                && target[..target.len() - 1] == file.module[..file.module.len() - 1];
            if same_folder && target != file.module {
                siblings
                    .entry(file.module.join("::"))
                    .or_default()
                    .entry(target.join("::"))
                    .or_insert((file.path.clone(), line));
            }
        }
    }
    assert!(!top.is_empty(), "no module names another: the scan found nothing under {}", root.display());
    if let Some(cycle) = find_cycle(&top) {
        panic!("top-level modules import each other in a cycle:\n{}", describe(&cycle, &top));
    }
    if let Some(cycle) = find_cycle(&siblings) {
        panic!("files of one module import each other in a cycle:\n{}", describe(&cycle, &siblings));
    }
}
