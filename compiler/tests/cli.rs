//! `ovidc` as a user runs it: exit codes and output of `ovidc check`.

use std::path::Path;
use std::process::Command;

fn ovidc(args: &[&str]) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new(env!("CARGO_BIN_EXE_ovidc"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("ovidc runs")
}

#[test]
fn check_accepts_a_correct_file() {
    let out = ovidc(&["check", "examples/kvs/kvs.ovid"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("ok: examples/kvs/kvs.ovid"));
}

#[test]
fn check_rejects_a_wrong_file_with_rendered_diagnostics() {
    let out = ovidc(&["check", "tests/ui/fail/shard-state_not_keyed.ovid"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tests/ui/fail/shard-state_not_keyed.ovid:15:21"),
        "{stderr}"
    );
    assert!(stderr.contains("ovid::shard::state_not_keyed"), "{stderr}");
    assert!(stderr.contains("help:"), "{stderr}");
    assert!(stderr.contains("error: 2 problems found"), "{stderr}");
}

#[test]
fn check_prints_json_for_editors() {
    let out = ovidc(&[
        "check",
        "--format",
        "json",
        "tests/ui/fail/wiring-unbound.ovid",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(json[0]["code"], "ovid::wiring::unbound");
    assert_eq!(json[0]["start"]["line"], 14);
    assert_eq!(json[0]["start"]["column"], 5);

    let ok = ovidc(&["check", "--format", "json", "examples/kvs/kvs.ovid"]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&ok.stdout).expect("JSON"),
        serde_json::json!([])
    );
}

#[test]
fn check_names_a_missing_file() {
    let out = ovidc(&["check", "no/such/file.ovid"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read `no/such/file.ovid`"));
}

#[test]
fn check_survives_binary_garbage() {
    let dir = std::env::temp_dir().join(format!("ovidc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("garbage.ovid");
    std::fs::write(&file, [0xff, 0xfe, 0x00, b'{', b'<', 0x80]).expect("write");
    let out = ovidc(&["check", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read"),
        "not UTF-8 is reported as unreadable"
    );
}
