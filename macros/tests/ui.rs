//! Misuse of `#[ovid::agent]` and `#[derive(ovid::Message)]` is a compile error pointing at the
//! code. Regenerate the expected output with `TRYBUILD=overwrite cargo test -p ovid-macros`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_*.rs");
    t.compile_fail("tests/ui/fail_*.rs");
}
