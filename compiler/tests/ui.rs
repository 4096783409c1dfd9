//! Golden tests: every example's checked model, and every failing file's rendered diagnostics
//! (one failing file per error code), snapshotted in tests/snapshots/.

use std::path::{Path, PathBuf};

use ovidc::diagnostic::{self, Code, Style};
use ovidc::syntax;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Loads a file by its workspace-relative path, so diagnostics name it the same on every
/// machine.
fn load(relative: &Path) -> (syntax::Program, Vec<diagnostic::Diagnostic>) {
    let root = root();
    let text = std::fs::read_to_string(root.join(relative)).expect("test file readable");
    let read = |p: &Path| std::fs::read_to_string(root.join(p));
    syntax::load_source(relative, text, &read)
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(root())
        .expect("under the workspace")
        .to_path_buf()
}

fn diagnostics_of(relative: &Path) -> (syntax::Program, Vec<diagnostic::Diagnostic>) {
    let (program, diagnostics) = load(relative);
    if !diagnostics.is_empty() {
        return (program, diagnostics);
    }
    let diagnostics = ovidc::check::check(&program).err().unwrap_or_default();
    (program, diagnostics)
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("tests/snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn failing_files_render_their_diagnostics() {
    settings().bind(|| {
        insta::glob!("../../tests/ui/fail", "*.ovid", |path| {
            let (program, diagnostics) = diagnostics_of(&relative(path));
            assert!(
                !diagnostics.is_empty(),
                "{} should fail to check",
                path.display()
            );
            let rendered: Vec<String> = diagnostics
                .iter()
                .map(|d| diagnostic::render(&program.sources, d, Style::Plain))
                .collect();
            insta::assert_snapshot!("fail", rendered.join("\n"));
        });
    });
}

#[test]
fn every_error_code_has_a_failing_file_that_reports_it() {
    // `ovidc plan`'s refusals compare two files: compiler/tests/plan.rs has one per code.
    for code in Code::ALL
        .iter()
        .filter(|c| !c.as_str().starts_with("ovid::plan::"))
    {
        let name = code
            .as_str()
            .trim_start_matches("ovid::")
            .replace("::", "-");
        let file = PathBuf::from(format!("tests/ui/fail/{name}.ovid"));
        assert!(
            root().join(&file).exists(),
            "no failing file {} for {code}",
            file.display()
        );
        let (_, diagnostics) = diagnostics_of(&file);
        assert!(
            diagnostics.iter().any(|d| d.code == *code),
            "{} reports {:?}, not {code}",
            file.display(),
            diagnostics
                .iter()
                .map(|d| d.code.as_str())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn diagnostics_as_json_carry_file_line_and_code() {
    let file = PathBuf::from("tests/ui/fail/shard-missing_key.ovid");
    let (program, diagnostics) = diagnostics_of(&file);
    let json: Vec<_> = diagnostics
        .iter()
        .map(|d| diagnostic::to_json(&program.sources, d))
        .collect();
    let value = serde_json::to_value(&json).expect("serializable");
    assert_eq!(value[0]["code"], "ovid::shard::missing_key");
    assert_eq!(value[0]["file"], "tests/ui/fail/shard-missing_key.ovid");
    assert_eq!(value[0]["start"]["line"], 15);
    assert!(!value[0]["help"].as_str().unwrap_or("").is_empty());
}

#[test]
fn the_controller_is_replicated_and_nothing_else() {
    // The system of tests/ui/fail/controller-transform.ovid, with each pipeline in turn.
    let base = std::fs::read_to_string(root().join("tests/ui/fail/controller-transform.ovid"))
        .expect("readable");
    let codes = |pipeline: &str| -> (Vec<&'static str>, Option<u32>) {
        let text = base.replace("controller |> shard(2, by: key);", pipeline);
        let path = Path::new("controller.ovid");
        let (program, diagnostics) =
            syntax::load_source(path, text, &|p: &Path| std::fs::read_to_string(p));
        assert!(diagnostics.is_empty(), "{pipeline} does not parse");
        match ovidc::check::check(&program) {
            Ok(model) => (Vec::new(), model.system.and_then(|s| s.controller_replicas)),
            Err(ds) => (ds.iter().map(|d| d.code.as_str()).collect(), None),
        }
    };
    assert_eq!(codes("controller |> replicate(3);"), (vec![], Some(3)));
    assert_eq!(codes("controller |> replicate(5);"), (vec![], Some(5)));
    // 2f+1 replicas: an even count is refused like for any agent.
    assert_eq!(
        codes("controller |> replicate(4);").0,
        vec!["ovid::transform::params"]
    );
    for other in [
        "controller |> replicate(3) |> batch(8);",
        "controller |> replicate(3); controller |> replicate(3);",
        "client -> controller |> compress(lz4);",
    ] {
        assert_eq!(
            codes(other).0,
            vec!["ovid::controller::transform"],
            "{other}"
        );
    }
}

#[test]
fn examples_check_and_their_models_are_snapshotted() {
    settings().bind(|| {
        insta::glob!("../../examples", "*/*.ovid", |path| {
            let (program, diagnostics) = diagnostics_of(&relative(path));
            let rendered: Vec<String> = diagnostics
                .iter()
                .map(|d| diagnostic::render(&program.sources, d, Style::Plain))
                .collect();
            assert!(
                diagnostics.is_empty(),
                "{} does not check:\n{}",
                path.display(),
                rendered.join("\n")
            );
            let model = ovidc::check::check(&program).expect("checked above");
            insta::assert_yaml_snapshot!("model", model);
        });
    });
}

#[test]
fn expansions_are_snapshotted() {
    settings().bind(|| {
        insta::glob!("../..", "{examples/*/*.ovid,tests/ui/*.ovid}", |path| {
            let rel = relative(path);
            let (program, diagnostics) = diagnostics_of(&rel);
            assert!(diagnostics.is_empty(), "{} does not check", rel.display());
            let model = ovidc::check::check(&program).expect("checked above");
            let Some(system) = &model.system else { return };
            let expanded = ovidc::expand::expand(&model).expect("expands");
            let boxes = ovidc::place::place(&expanded, &system.boxes);
            // Every route's key is a prefix of its value (DESIGN.md: ART).
            for table in expanded.routes.values() {
                for (k, v) in table {
                    assert!(
                        v.starts_with(k.as_str()),
                        "route {k} -> {v} is not under {k}"
                    );
                }
            }
            insta::assert_snapshot!("graph", ovidc::graph::text(&model, &expanded, &boxes));
            let deployment = ovidc::emit::deployment::deployment(&model, &expanded, &boxes);
            insta::assert_json_snapshot!("deployment", deployment);
        });
    });
}
