//! Issue 13, point 1: transfer progress in bytes — `--progress=json` events and the terminal
//! bar — against a real sshd/rsync/rrsync target.

use crate::util::{World, skip_unless_tools, stderr};

/// The `--progress=json` events on `err` (every stderr line must be one).
fn events(err: &str) -> Vec<serde_json::Value> {
    err.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in {err}")))
        .collect()
}

#[test]
fn json_progress_counts_the_bytes_sent() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    // Two files of a few MiB (rsync reports progress while they move) and small ones, one
    // with a name that looks like a progress line.
    w.write("big/one.bin", &vec![1u8; 3 << 20]);
    w.write("big/two.bin", &vec![2u8; 1 << 20]);
    w.write(
        "     1,234 100%    1.00kB/s    0:00:00 (xfr#1, to-chk=0/1)",
        b"x",
    );
    w.write("small.txt", b"hello");
    let sent = (3 << 20) + (1 << 20) + 1 + 5;
    let out = w
        .home
        .offsync(["--progress=json", "apply", "--yes", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // stdout stays the result document.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc[0]["target"], "t1", "{doc}");
    let err = stderr(&out);
    let ev = events(&err);
    // The fields come in a fixed order (serde_json's `Value` sorts them: read the text).
    let first = err.lines().next().expect("events");
    let at: Vec<usize> = [
        "event",
        "target",
        "phase",
        "bytes",
        "total_bytes",
        "files",
        "total_files",
        "rate",
        "elapsed_ms",
        "final",
    ]
    .iter()
    .map(|k| {
        first
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} in {first}"))
    })
    .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "field order: {first}");
    assert!(ev.iter().all(|e| e["target"] == "t1"));
    let progress: Vec<&serde_json::Value> =
        ev.iter().filter(|e| e["event"] == "progress").collect();
    assert!(!progress.is_empty(), "{ev:?}");
    let bytes: Vec<u64> = progress
        .iter()
        .map(|e| e["bytes"].as_u64().unwrap())
        .collect();
    assert!(
        bytes.windows(2).all(|w| w[0] <= w[1]),
        "monotonic: {bytes:?}"
    );
    let finals: Vec<&&serde_json::Value> = progress.iter().filter(|e| e["final"] == true).collect();
    assert_eq!(finals.len(), 1, "one final event: {ev:?}");
    let last = finals[0];
    assert_eq!(last["bytes"], sent, "{last}");
    assert_eq!(last["total_bytes"], sent, "{last}");
    assert_eq!(last["files"], 4, "{last}");
    assert_eq!(last["total_files"], 4, "{last}");
    assert_eq!(last["phase"], "upload");
    assert!(progress.iter().all(|e| e["total_bytes"] == sent));
    let phases: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "phase")
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["upload", "verify", "commit", "done"], "{ev:?}");

    // Nothing to send: no progress at all, only the target's end.
    let out = w
        .home
        .offsync(["--progress=json", "apply", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&stderr(&out));
    assert!(ev.iter().all(|e| e["event"] == "phase"), "{ev:?}");

    // Not a terminal: `auto` and `none` print no progress.
    w.write("small.txt", b"hello again");
    for mode in ["--progress=auto", "--progress=none"] {
        let out = w.home.offsync([mode, "apply", "--yes"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stderr(&out), "", "{mode}");
        w.write("small.txt", b"hello once more");
    }
}

#[test]
fn terminal_bar_shows_bytes() {
    if !skip_unless_tools() {
        return;
    }
    let Ok(script) = which("script") else {
        eprintln!("skipping: no `script` (bsdutils) to give offsync a terminal");
        return;
    };
    let w = World::fast(1);
    w.write("big.bin", &vec![7u8; 4 << 20]);
    let base = w.home.offsync_std();
    let command = format!(
        "'{}' --progress=bar apply --yes --bwlimit=8m",
        base.get_program().to_str().unwrap()
    );
    let out = std::process::Command::new(script)
        .env_clear()
        .envs(base.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("TERM", "xterm")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // The bar counts bytes of the 4 MiB planned, up to all of them, with a rate and a time
    // left.
    assert!(text.contains("] 4.00 MiB/4.00 MiB "), "{text}");
    assert!(text.contains("iB/s"), "{text}");
    assert!(text.contains("ETA"), "{text}");
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}
