//! `rollgate-gate-bench` as `make bench-gate` runs it: the real binary and the file it writes.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } =
        Command::new(env!("CARGO_BIN_EXE_rollgate-gate-bench")).args(args).output().expect("the binary runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn the_benchmark_report_is_the_same_for_a_seed_and_goes_between_the_markers() {
    let dir = std::env::temp_dir().join(format!("rollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let doc = dir.join("gate.md");
    std::fs::write(&doc, "# Gate\n<!-- bench-gate:begin -->\n<!-- bench-gate:end -->\nafter\n")
        .expect("write");
    let path = doc.display().to_string();
    let (code, _, err) = bench(&["--runs", "3", "--seed", "9", "--update", &path]);
    assert_eq!(code, 0, "{err}");
    let first = std::fs::read_to_string(&doc).expect("read");
    assert!(first.contains("| 100 | 5 % | bad 100× | rollgate |"), "{first}");
    assert!(first.contains("#### Targets") && first.ends_with("<!-- bench-gate:end -->\nafter\n"));
    let (code, out, _) = bench(&["--runs", "3", "--seed", "9", "--threads", "1"]);
    assert_eq!(code, 0);
    assert!(first.contains(&out), "the printed report is the one written, whatever the threads");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_without_markers_is_refused_and_left_alone() {
    let dir = std::env::temp_dir().join(format!("rollgate-bench-nomarkers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let doc = dir.join("gate.md");
    std::fs::write(&doc, "# Gate\n").expect("write");
    let (code, _, err) = bench(&["--runs", "1", "--update", &doc.display().to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no <!-- bench-gate:begin --> marker"), "{err}");
    assert_eq!(std::fs::read_to_string(&doc).expect("read"), "# Gate\n");
    let _ = std::fs::remove_dir_all(&dir);
}
