//! The `.ovid` examples of the docs cannot drift: every ```ovid block of docs/*.md and
//! README.md that declares a system is checked as a newcomer would check it, copied into a
//! file. A block that starts with `// expect: CODE …` must fail with exactly those codes;
//! every other one must pass. A block headed `// file: NAME` is also written as NAME, so that
//! the blocks after it can import it. A block headed `// from: PATH` is an excerpt of that file
//! of the repository: each of its lines must stand in it (comments aside), and the file must
//! check.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ovidc::pipeline::{Failure, load_and_check};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The ```ovid blocks of a Markdown text, with the line each starts at.
fn blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence == "```ovid" => current = Some((i + 2, String::new())),
            Some(_) if fence == "```" => out.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    out
}

/// The words after `// {key}:` on a line of the block, if it has one.
fn header<'a>(block: &'a str, key: &str) -> Option<&'a str> {
    block
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("//")?
                .trim()
                .strip_prefix(key)?
                .strip_prefix(':')
        })
        .map(str::trim)
}

#[test]
fn every_system_in_the_docs_checks_as_it_says() {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.push(root().join("README.md"));
    docs.sort();
    let mut checked = 0;
    let mut problems = Vec::new();
    for doc in &docs {
        let name = doc.file_name().unwrap().to_string_lossy().to_string();
        let dir = std::env::temp_dir().join(format!("ovid-docs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(doc).unwrap();
        let all = blocks(&text);
        for (_, block) in &all {
            if let Some(file) = header(block, "file") {
                std::fs::write(dir.join(file), block).unwrap();
            }
        }
        for (line, block) in all {
            if !block.lines().any(|l| l.trim_start().starts_with("system ")) {
                continue;
            }
            if let Some(source) = header(&block, "from") {
                problems.extend(
                    excerpt_problems(&block, source).map(|p| format!("{name}:{line}: {p}")),
                );
                checked += 1;
                continue;
            }
            let file = dir.join(format!("block-at-line-{line}.ovid"));
            std::fs::write(&file, &block).unwrap();
            let expected: BTreeSet<String> = header(&block, "expect")
                .map(|codes| codes.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default();
            let got: BTreeSet<String> = match load_and_check(&file) {
                Ok(_) => BTreeSet::new(),
                Err(Failure::Diagnostics(_, ds)) => {
                    ds.iter().map(|d| d.code.as_str().to_string()).collect()
                }
                Err(Failure::Io(e)) => BTreeSet::from([format!("io: {e}")]),
            };
            if got != expected {
                problems.push(format!(
                    "{name}:{line}: expected {expected:?}, `ovidc check` gave {got:?}"
                ));
            }
            checked += 1;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 10, "only {checked} systems found in the docs");
}

/// What is wrong with `block` as an excerpt of the repository's file `source`.
fn excerpt_problems(block: &str, source: &str) -> Option<String> {
    let path = root().join(source);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Some(format!("an excerpt of `{source}`, which does not exist"));
    };
    let code = |l: &str| l.split("//").next().unwrap_or_default().trim().to_string();
    let lines: BTreeSet<String> = text.lines().map(code).collect();
    if let Some(missing) = block
        .lines()
        .map(code)
        .find(|l| !l.is_empty() && !lines.contains(l))
    {
        return Some(format!("`{missing}` is not in `{source}`"));
    }
    load_and_check(&path)
        .err()
        .map(|_| format!("`{source}` does not check"))
}

#[test]
fn blocks_and_headers_are_read_as_written() {
    let md = "text\n```ovid\n// file: a.ovid\nsystem S {}\n```\n```sh\nno\n```\n";
    let b = blocks(md);
    assert_eq!(b, vec![(3, "// file: a.ovid\nsystem S {}\n".to_string())]);
    assert_eq!(header(&b[0].1, "file"), Some("a.ovid"));
    assert_eq!(header(&b[0].1, "expect"), None);
}

#[test]
fn an_excerpt_that_drifted_from_its_file_is_caught() {
    let drifted = "system Store {\n    KVS |> shard(3, by: key);\n}\n";
    let why = excerpt_problems(drifted, "examples/kvs/kvs.ovid").expect("drift is caught");
    assert!(why.contains("shard(3"), "{why}");
    assert!(excerpt_problems("system Store {\n", "examples/nope.ovid").is_some());
    assert_eq!(
        excerpt_problems("system Store {\n}\n", "examples/kvs/kvs.ovid"),
        None
    );
}
