//! `promtool check metrics` for the tests: CI installs Debian's
//! `prometheus` package, which has it; elsewhere the test says it skipped.

use std::io::Write;
use std::process::{Command, Stdio};

/// Asserts promtool reports nothing on `body`; prints why and returns
/// where promtool is not installed.
pub fn assert_promtool_accepts(test: &str, body: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("ebb-test skipped: {test}: promtool is not installed");
        return;
    };
    child
        .stdin
        .take()
        .expect("a piped stdin")
        .write_all(body.as_bytes())
        .expect("promtool reads its stdin");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\non:\n{body}"
    );
}
