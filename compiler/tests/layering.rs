//! The shape of the workspace, checked: no import loop among the modules of a crate, and no
//! transformation or proxy kind named outside the standard library (its registry is the only
//! list of them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without comments and without its `#[cfg(test)]` tail (tests may use
/// anything).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file of `src` belongs to (`host.rs`, `sim/world.rs` → `sim`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Module → the other modules of its crate it names (`crate::x`).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(src);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in &files {
        let Some(m) = module_of(src, f) else {
            continue;
        };
        let code = code(f);
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != m && modules.contains(&name) {
                g.get_mut(&m).unwrap().insert(name);
            }
        }
    }
    g
}

/// A cycle of `g`, if it has one.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_string());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in &g[m] {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_an_import_loop() {
    for krate in ["compiler", "runtime", "stdlib", "sim", "macros"] {
        let g = graph(&root().join(krate).join("src"));
        if let Some(c) = cycle(&g) {
            panic!("{krate}: import loop {}", c.join(" → "));
        }
    }
}

#[test]
fn the_loop_finder_finds_a_loop() {
    let g = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
}

#[test]
fn only_the_standard_library_names_a_transformation_or_a_proxy() {
    let hooks: Arc<dyn ovid_stdlib::proxy::Hooks> = Arc::new(ovid_stdlib::proxy::NoHooks);
    let mut names: Vec<String> = ovid_stdlib::ALL
        .iter()
        .map(|t| format!("\"{}\"", t.spec().name))
        .collect();
    names.extend(
        ovid_stdlib::proxy::kinds(hooks)
            .into_iter()
            .map(|(kind, _)| kind.to_string()),
    );
    for krate in ["compiler", "runtime", "sim"] {
        for file in sources(&root().join(krate).join("src")) {
            let code = code(&file);
            for name in &names {
                assert!(
                    !code.contains(name.as_str()),
                    "{} names `{}`: only stdlib may (call the Transformation trait instead)",
                    file.display(),
                    name.trim_matches('"')
                );
            }
        }
    }
}
