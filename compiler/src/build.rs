//! `ovidc build`: a checked system → its generated crate on disk, and `cargo build` of it.
//!
//! Generation is a pure function ([`crate::emit::krate::generate`]); this module finds what it
//! needs on disk (the crates of `impl rust` agents), writes the files (leaving unchanged ones
//! untouched, so cargo does not rebuild them), and runs cargo with the target directory shared
//! with the Ovid workspace, so dependencies compile once.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::check::model::{Behaviour, Model};
use crate::emit::deployment;
use crate::emit::krate::{self, GeneratedFile, Paths};
use crate::pipeline::{Failure, load_expanded};
use crate::syntax::Program;
use crate::syntax::ast::ImplKind;
use ovid::deployment::Deployment;

/// What `ovidc build` produced.
#[derive(Debug)]
pub struct Built {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The package (and binary) name.
    pub package: String,
    /// The deployment it runs.
    pub deployment: Deployment,
    /// What its binary says it runs ([`krate::fingerprint`]).
    pub fingerprint: String,
}

/// Checks, expands and places `file`, and writes its crate into `out`.
pub fn generate(file: &Path, out: &Path) -> Result<Built, Failure> {
    let (package, deployment, files) = crate_files(file)?;
    write_files(out, &files).map_err(|e| {
        Failure::Io(format!(
            "cannot write the crate into `{}`: {e}",
            out.display()
        ))
    })?;
    Ok(Built {
        dir: out.to_path_buf(),
        package,
        deployment,
        fingerprint: krate::fingerprint(&files),
    })
}

/// Checks, expands and places `file`: its package name, deployment and crate files.
pub fn crate_files(file: &Path) -> Result<(String, Deployment, Vec<GeneratedFile>), Failure> {
    let (program, model, expanded, boxes) = load_expanded(file)?;
    let deployment = deployment::deployment(&model, &expanded, &boxes);
    let mut paths = Paths::of_this_checkout();
    paths.rust_crates = rust_crates(&program, &model, file)?;
    paths.source = Some(source_key(file));
    let files = krate::generate(&model, &expanded, &deployment, &paths).map_err(Failure::Io)?;
    Ok((krate::package_name(&expanded.system), deployment, files))
}

/// `file` relative to the Ovid workspace if it is inside it (the same on every machine), else
/// its full path.
fn source_key(file: &Path) -> PathBuf {
    let full = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let root = Paths::of_this_checkout()
        .runtime
        .parent()
        .and_then(|r| std::fs::canonicalize(r).ok());
    match root.and_then(|r| full.strip_prefix(r).ok().map(Path::to_path_buf)) {
        Some(relative) => relative,
        None => full,
    }
}

/// The target directory builds share: `$CARGO_TARGET_DIR`, else the Ovid checkout's.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join("target"),
    }
}

/// Runs `cargo build` on a generated crate (its progress on our standard error); the path of
/// the binary.
pub fn cargo_build(built: &Built) -> Result<PathBuf, Failure> {
    let target = target_dir();
    eprintln!(
        "ovidc: compiling {} (cargo, target directory {})",
        built.package,
        target.display()
    );
    let binary = target.join("debug").join(&built.package);
    run_cargo(built, &target)?;
    if runs_its_system(&binary, built)? {
        return Ok(binary);
    }
    // Another crate with this package name (another file declaring a system of this name)
    // was built into the shared target directory since, and cargo, finding this crate's
    // build fresh, left that one's binary in place. Without it, cargo puts this one back.
    std::fs::remove_file(&binary).map_err(|e| {
        Failure::Io(format!(
            "cannot remove the stale `{}`: {e}",
            binary.display()
        ))
    })?;
    run_cargo(built, &target)?;
    if runs_its_system(&binary, built)? {
        return Ok(binary);
    }
    Err(Failure::Io(format!(
        "`{}` does not run the system of `{}`: another build of a system named `{}` replaced it; run one build at a time",
        binary.display(),
        built.dir.display(),
        built.deployment.system
    )))
}

/// `cargo build` of the generated crate, into `target`.
fn run_cargo(built: &Built, target: &Path) -> Result<(), Failure> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("build")
        .arg("--manifest-path")
        .arg(built.dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .status()
        .map_err(|e| {
            Failure::Io(format!(
                "cannot run cargo (is the Rust toolchain installed?): {e}"
            ))
        })?;
    if !status.success() {
        return Err(Failure::Io(format!(
            "the generated crate in `{}` did not compile; the errors above say why (an `impl rust` type without `from_bindings`, or a message type that differs from the .ovid declaration, are the usual causes)",
            built.dir.display()
        )));
    }
    Ok(())
}

/// Whether `binary` runs `built`'s system: it says the fingerprint of its files.
fn runs_its_system(binary: &Path, built: &Built) -> Result<bool, Failure> {
    let out = Command::new(binary)
        .arg("fingerprint")
        .output()
        .map_err(|e| Failure::Io(format!("cannot run `{}`: {e}", binary.display())))?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == built.fingerprint)
}

/// Writes every file, leaving those whose contents did not change untouched.
fn write_files(out: &Path, files: &[GeneratedFile]) -> std::io::Result<()> {
    for f in files {
        let path = out.join(&f.path);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == f.contents) {
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, &f.contents)?;
    }
    Ok(())
}

/// The crate of every `impl rust "krate::Type"`: a Cargo package named `krate` in the
/// directory of the .ovid file that declares the agent, or in a subdirectory `krate/` of it.
fn rust_crates(
    program: &Program,
    model: &Model,
    file: &Path,
) -> Result<std::collections::BTreeMap<String, PathBuf>, Failure> {
    let mut found = std::collections::BTreeMap::new();
    for (name, agent) in &model.agents {
        let Behaviour::Rust { path } = &agent.behaviour else {
            continue;
        };
        let clause = agent
            .ast
            .implementation
            .iter()
            .find(|i| matches!(i.kind, ImplKind::Rust));
        let (where_, dir) = match clause {
            Some(c) => {
                let src = program.sources.get(c.span.file);
                let lc = program.sources.line_col(c.span.file, c.span.start);
                (
                    format!("{}:{}:{}", src.name, lc.line, lc.column),
                    src.path.parent().map(Path::to_path_buf),
                )
            }
            None => (
                file.display().to_string(),
                file.parent().map(Path::to_path_buf),
            ),
        };
        let dir = dir.unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let mut segments = path.split("::");
        let krate = segments.next().unwrap_or_default().to_string();
        let type_path: Vec<&str> = segments.collect();
        let fail = |why: String| {
            Failure::Io(format!(
                "{where_}: agent `{name}`: `impl rust \"{path}\"`: {why}\n  help: put a Cargo package named `{krate}` in `{}` (or `{}`), with a `pub struct {}` that has `#[ovid::agent]` handlers and `pub fn from_bindings(uses: &ovid::Bindings) -> Self`",
                dir.display(),
                dir.join(&krate).display(),
                type_path.last().unwrap_or(&"Type"),
            ))
        };
        if type_path.is_empty() {
            return Err(fail("the path names a crate but no type".into()));
        }
        let krate_dir = [dir.clone(), dir.join(&krate)]
            .into_iter()
            .find(|d| {
                package_name(&d.join("Cargo.toml")).is_some_and(|n| n.replace('-', "_") == krate)
            })
            .ok_or_else(|| fail(format!("no crate named `{krate}` found")))?;
        if !defines_type(&krate_dir.join("src"), &type_path) {
            return Err(fail(format!(
                "crate `{krate}` (in `{}`) has no public type `{}`",
                krate_dir.display(),
                type_path.join("::")
            )));
        }
        let krate_dir = std::fs::canonicalize(&krate_dir).unwrap_or(krate_dir);
        found.insert(krate, krate_dir);
    }
    Ok(found)
}

/// The `[package] name` of a Cargo.toml, if it can be read.
fn package_name(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let doc: toml::Table = text.parse().ok()?;
    doc.get("package")?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

/// Whether the crate whose sources are in `src` defines the public type at `path` (modules
/// then the type's name), following `mod x;` to `x.rs` or `x/mod.rs`.
fn defines_type(src: &Path, path: &[&str]) -> bool {
    let Ok(text) = std::fs::read_to_string(src.join("lib.rs")) else {
        return false;
    };
    let Ok(file) = syn::parse_file(&text) else {
        return false;
    };
    find_in(&file.items, src, path)
}

fn find_in(items: &[syn::Item], dir: &Path, path: &[&str]) -> bool {
    match path {
        [] => false,
        [ty] => items.iter().any(|i| match i {
            syn::Item::Struct(s) => s.ident == ty,
            syn::Item::Enum(e) => e.ident == ty,
            syn::Item::Type(t) => t.ident == ty,
            syn::Item::Use(_) => true, // re-exports are not followed; trust the compiler
            _ => false,
        }),
        [module, rest @ ..] => items.iter().any(|i| match i {
            syn::Item::Mod(m) if m.ident == module => match &m.content {
                Some((_, inner)) => find_in(inner, &dir.join(module), rest),
                None => {
                    let candidates = [
                        dir.join(format!("{module}.rs")),
                        dir.join(module).join("mod.rs"),
                    ];
                    candidates.iter().any(|f| {
                        std::fs::read_to_string(f)
                            .ok()
                            .and_then(|t| syn::parse_file(&t).ok())
                            .is_some_and(|parsed| find_in(&parsed.items, &dir.join(module), rest))
                    })
                }
            },
            syn::Item::Use(_) => true,
            _ => false,
        }),
    }
}
