//! `ovidc plan OLD NEW`: the plans between versions of tests/plan/store2.ovid, as text and as
//! JSON, and the refusals (one NEW file per `ovid::plan::*` code), snapshotted in
//! tests/snapshots/.

use std::path::{Path, PathBuf};

use ovidc::diagnostic::{self, Code, Style};
use ovidc::pipeline::{Failure, load_expanded};
use ovidc::plan::{Version, plan, text};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Loads a file by its workspace-relative path, so that diagnostics name it the same everywhere.
fn load(
    relative: &str,
) -> (
    ovidc::syntax::Program,
    ovidc::check::Model,
    ovid::deployment::Deployment,
) {
    // The working directory is the process's: one test at a time moves it.
    static CWD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let loaded = {
        let _turn = CWD.lock().unwrap_or_else(|e| e.into_inner());
        let here = std::env::current_dir().unwrap();
        std::env::set_current_dir(root()).unwrap();
        let loaded = load_expanded(Path::new(relative));
        std::env::set_current_dir(here).unwrap();
        loaded
    };
    match loaded {
        Ok((program, model, expanded, boxes)) => {
            let d = ovidc::emit::deployment::deployment(&model, &expanded, &boxes);
            (program, model, d)
        }
        Err(Failure::Io(e)) => panic!("{relative}: {e}"),
        Err(Failure::Diagnostics(..)) => panic!("{relative} does not check"),
    }
}

fn planned(old: &str, new: &str) -> Result<ovidc::plan::Plan, String> {
    let (o, n) = (load(old), load(new));
    let ov = Version {
        program: &o.0,
        model: &o.1,
        deployment: &o.2,
    };
    let nv = Version {
        program: &n.0,
        model: &n.1,
        deployment: &n.2,
    };
    plan(&ov, &nv).map_err(|ds| {
        ds.iter()
            .map(|d| diagnostic::render(&n.0.sources, d, Style::Plain))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("tests/snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn plans_between_versions_print_as_text_and_json() {
    settings().bind(|| {
        for (name, old, new) in [
            (
                "reshard-and-replicate",
                "tests/plan/store2.ovid",
                "tests/plan/store4.ovid",
            ),
            ("back", "tests/plan/store4.ovid", "tests/plan/store2.ovid"),
            (
                "nothing",
                "tests/plan/store2.ovid",
                "tests/plan/store2.ovid",
            ),
        ] {
            let p = planned(old, new).unwrap_or_else(|e| panic!("{old} → {new}: {e}"));
            insta::assert_snapshot!(format!("plan@{name}"), text(&p));
            insta::assert_json_snapshot!(format!("plan@{name}.json"), p);
        }
    });
}

#[test]
fn a_plan_moves_state_through_both_mappings_in_order() {
    let p = planned("tests/plan/store2.ovid", "tests/plan/store4.ovid").unwrap();
    let names: Vec<String> = p
        .steps
        .iter()
        .map(|s| {
            serde_json::to_value(s).unwrap()["step"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let order = [
        "start_boxes",
        "start_agents",
        "wedge",
        "capture",
        "map_state",
        "restore",
        "replace",
        "switch_routes",
        "unwedge",
        "stop_agents",
    ];
    assert_eq!(names, order);
    assert!(
        planned("tests/plan/store2.ovid", "tests/plan/store2.ovid")
            .unwrap()
            .steps
            .is_empty()
    );
}

#[test]
fn changes_that_cannot_be_made_live_are_refused_in_new() {
    settings().bind(|| {
        let plan_codes: Vec<Code> = Code::ALL
            .iter()
            .copied()
            .filter(|c| c.as_str().starts_with("ovid::plan::"))
            .collect();
        assert!(!plan_codes.is_empty());
        for code in plan_codes {
            let name = code
                .as_str()
                .trim_start_matches("ovid::plan::")
                .replace('_', "-");
            let new = format!("tests/plan/{name}.ovid");
            let rendered = planned("tests/plan/store2.ovid", &new)
                .err()
                .unwrap_or_else(|| panic!("{new} should be refused"));
            assert!(rendered.contains(code.as_str()), "{rendered}");
            assert!(rendered.contains(&new), "points into NEW: {rendered}");
            insta::assert_snapshot!(format!("plan@refused-{name}"), rendered);
        }
    });
}
