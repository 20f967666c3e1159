//! `offsync log`, `offsync status` and `target list`'s last apply: what they print from a
//! written history (insta snapshots), their filters, a garbled line, rotated files, a bad
//! `--since`, and `status` after real applies — instantly, with a target's sshd stopped.
//!
//! Rotation under concurrent appenders is proven in `oplog`'s unit tests (threads with their
//! own descriptors, so the `flock`s compete as between processes): two offsync processes
//! cannot append to one home at the same time, as every appending command takes
//! `apply.lock` first.

use crate::util::{Home, World, skip_unless_tools, stderr, stdout};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn record(ts: &str, target: &str, op: &str, status: &str, extra: Value) -> Value {
    let mut r = json!({
        "timestamp": ts, "target": target, "host": "host", "operation": op, "status": status,
        "files_changed": ["a"], "files_changed_count": 3, "files_deleted": [],
        "files_deleted_count": 1, "bytes": 2048, "duration_ms": 4249,
        "source_digest": "1111111111111111aaaa", "plan_digest": "2222222222222222bbbb",
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

/// A home whose log has records in `operations.log.1` and `operations.log`, a torn line and
/// a Python offsync line; returns the lines as written (oldest first, records only).
fn written_history(h: &Home) -> Vec<String> {
    std::fs::create_dir_all(&h.home).unwrap();
    let recs = [
        record("2026-11-01T08:00:00.000Z", "t1", "apply", "ok", json!({})),
        record(
            "2026-11-02T09:30:00.000Z",
            "t2",
            "apply",
            "failed",
            json!({"error": "connection refused\nsecond line", "error_kind": "unreachable",
                   "duration_ms": 812, "bytes": 0}),
        ),
        record(
            "2026-11-03T10:00:00.000Z",
            "web",
            "apply",
            "ok",
            json!({"release": "20261103T100000.000Z-2222", "duration_ms": 192000}),
        ),
        record(
            "2026-11-04T11:00:00.000Z",
            "web",
            "rollback",
            "ok",
            json!({"release": "20261101T080000.000Z-1111", "files_changed": [],
                   "files_changed_count": 0, "files_deleted_count": 0, "bytes": 0}),
        ),
        record(
            "2026-11-05T12:00:00.000Z",
            "host1",
            "pull file:///mnt/usb",
            "unchanged",
            json!({"files_changed": [], "files_changed_count": 0, "files_deleted_count": 0,
                   "duration_ms": 3720000}),
        ),
    ];
    let lines: Vec<String> = recs.iter().map(|r| r.to_string()).collect();
    let python =
        r#"{"timestamp": "2025-01-01", "host": "h", "operation": "push", "files_changed": []}"#;
    let rotated = format!("{python}\n{}\n{}\n", lines[0], lines[1]);
    std::fs::write(h.home.join("operations.log.1"), rotated).unwrap();
    let current = format!(
        "{}\n{{\"timestamp\":\"2026-11-0\n{}\n{}\n",
        lines[2], lines[3], lines[4]
    );
    std::fs::write(h.home.join("operations.log"), current).unwrap();
    lines
}

fn log(h: &Home, args: &[&str]) -> (String, String) {
    let out = h
        .offsync(std::iter::once("log").chain(args.iter().copied()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    (stdout(&out), stderr(&out))
}

fn targets_of(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

#[test]
fn log_prints_newest_first_across_rotated_files_and_skips_bad_lines_with_a_warning() {
    let h = Home::new();
    let lines = written_history(&h);
    let (text, err) = log(&h, &[]);
    insta::assert_snapshot!("log_text", text);
    assert_eq!(
        err,
        "warning: operations.log line 2: not JSON (a torn or damaged line); skipped\n\
         warning: operations.log.1 line 1: not an offsync record; skipped\n"
            .replace(
                "operations.log",
                &h.home.join("operations.log").display().to_string()
            )
    );

    // --json: the stored lines, verbatim, in the same order.
    let (json, _) = log(&h, &["--json"]);
    let want: Vec<&str> = lines.iter().rev().map(String::as_str).collect();
    assert_eq!(json.lines().collect::<Vec<_>>(), want);
    let (json, _) = log(&h, &["--json", "--reverse", "-n", "2"]);
    assert_eq!(json.lines().collect::<Vec<_>>(), [&lines[3], &lines[4]]);

    // Filters.
    let (t, _) = log(&h, &["--target", "web", "--target", "t2"]);
    assert_eq!(targets_of(&t), ["web", "web", "t2"]);
    let (t, _) = log(&h, &["-n", "2"]);
    assert_eq!(targets_of(&t), ["host1", "web"]);
    let (t, _) = log(&h, &["--reverse"]);
    assert_eq!(targets_of(&t), ["t1", "t2", "web", "web", "host1"]);
    let (t, _) = log(&h, &["--since", "2026-11-03"]);
    assert_eq!(targets_of(&t), ["host1", "web", "web"]);
    let (t, _) = log(&h, &["--since", "2026-11-02T10:30:00+01:00"]);
    assert_eq!(targets_of(&t), ["host1", "web", "web", "t2"]);
    let (t, e) = log(&h, &["--target", "nobody"]);
    assert_eq!(t, "");
    assert!(e.contains("no records"), "{e}");
}

#[test]
fn since_ages_count_back_from_now() {
    let h = Home::new();
    std::fs::create_dir_all(&h.home).unwrap();
    let now = chrono::Utc::now();
    let ago = |secs: i64| {
        (now - chrono::TimeDelta::seconds(secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let lines: Vec<String> = [
        (ago(9 * 86_400), "old"),
        (ago(3 * 86_400), "days"),
        (ago(5 * 3600), "hours"),
        (ago(60), "now"),
    ]
    .iter()
    .map(|(ts, t)| record(ts, t, "apply", "ok", json!({})).to_string() + "\n")
    .collect();
    std::fs::write(h.home.join("operations.log"), lines.concat()).unwrap();
    for (since, want) in [
        ("1w", vec!["now", "hours", "days"]),
        ("2d", vec!["now", "hours"]),
        ("12h", vec!["now", "hours"]),
        ("30m", vec!["now"]),
        ("30s", vec![]),
    ] {
        let (t, _) = log(&h, &["--since", since]);
        assert_eq!(targets_of(&t), want, "--since {since}");
    }
}

#[test]
fn a_bad_since_or_count_exits_64_naming_the_flag_and_writes_nothing() {
    let h = Home::new();
    written_history(&h);
    let before = crate::util::snapshot(&h.home);
    for bad in [
        &["--since", "yesterday"][..],
        &["--since", "2d3h"],
        &["-n", "x"],
    ] {
        let out = h
            .offsync(std::iter::once("log").chain(bad.iter().copied()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{bad:?}");
        let err = stderr(&out);
        let flag = if bad[0] == "-n" {
            "--max-count"
        } else {
            bad[0]
        };
        assert!(err.contains(flag), "{bad:?}: {err}");
        if bad[0] == "--since" {
            assert!(err.contains("2d or 1w"), "{err}");
        }
        assert!(stdout(&out).is_empty());
    }
    assert_eq!(crate::util::snapshot(&h.home), before);
}

/// Same-length placeholders for times and 12-digit digests, so columns stay aligned.
fn normalise(w: &World, s: &str) -> String {
    let mut out = s
        .replace(&w.source.display().to_string(), "[SOURCE]")
        .replace(&format!("{}@", crate::util::user()), "[USER]@");
    // The error text is cut to the column width after it names the login, so where it is cut
    // depends on the user name (root in one CI run, offsync-test in the other): keep only
    // its kind.
    out = out
        .lines()
        .map(|l| match l.find("last apply failed: ") {
            Some(i) => {
                let rest = &l[i + "last apply failed: ".len()..];
                let kind = rest.split(':').next().unwrap_or("");
                format!("{}last apply failed: {kind}: [MESSAGE]", &l[..i])
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if out.ends_with('\n') { "\n" } else { "" };
    let bytes = out.clone().into_bytes();
    let mut res = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let is_time = |b: &[u8]| {
        b.len() >= 20
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'Z'
            && b[..4].iter().all(u8::is_ascii_digit)
    };
    while i < bytes.len() {
        let word_start = i == 0 || bytes[i - 1] == b' ';
        if word_start && is_time(&bytes[i..]) {
            res.extend_from_slice(b"YYYY-MM-DDThh:mm:ssZ");
            i += 20;
            continue;
        }
        let hex = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            .count();
        if word_start && hex == 12 && bytes.get(i + 12).is_none_or(|b| *b == b' ' || *b == b'\n') {
            res.extend_from_slice(b"<digest-12h>");
            i += 12;
            continue;
        }
        res.push(bytes[i]);
        i += 1;
    }
    out = String::from_utf8(res).unwrap();
    out
}

fn status(w: &World, args: &[&str]) -> (Option<i32>, String, Duration) {
    let t = Instant::now();
    let out = w
        .home
        .offsync(std::iter::once("status").chain(args.iter().copied()))
        .output()
        .unwrap();
    (out.status.code(), stdout(&out), t.elapsed())
}

#[test]
fn status_after_real_applies_needs_no_network_and_sees_source_changes() {
    if !skip_unless_tools() {
        return;
    }
    let mut w = World::fast(2);
    w.write("index.html", b"<h1>one</h1>\n");
    let (code, text, _) = status(&w, &["--detailed-exitcode"]);
    assert_eq!(code, Some(2), "never applied is pending");
    insta::assert_snapshot!("status_never_applied", normalise(&w, &text));

    w.home.offsync(["apply", "--yes"]).assert().success();
    let (code, text, _) = status(&w, &["--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{text}");
    insta::assert_snapshot!("status_in_sync", normalise(&w, &text));

    // t2 goes away: status still answers, at once, from the log.
    w.targets[1].stop();
    w.write("index.html", b"<h1>two</h1>\n");
    let (code, text, took) = status(&w, &[]);
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        text.matches("source changed since the last apply").count(),
        2,
        "{text}"
    );
    assert_eq!(status(&w, &["--detailed-exitcode"]).0, Some(2));

    // t1 gets the change, t2 fails.
    let out = w.home.offsync(["apply", "--yes"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let (_, text, _) = status(&w, &[]);
    insta::assert_snapshot!("status_after_a_failed_apply", normalise(&w, &text));
    let (_, json, _) = status(&w, &["--json", "--target", "t2"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let t2 = &v["targets"][0];
    assert_eq!(t2["name"], "t2");
    assert_eq!(t2["state"], "last_failed");
    assert_eq!(t2["pending"], true);
    assert_eq!(t2["last_apply"]["status"], "failed");
    assert_eq!(t2["last_apply"]["error_kind"], "unreachable");
    assert_eq!(t2["last_success"]["status"], "ok");
    assert_ne!(
        t2["last_success"]["source_digest"], v["source"]["digest"],
        "the success was of the old source"
    );
    assert_eq!(v["targets"].as_array().unwrap().len(), 1);

    // The log of the same applies: newest first, the failure on top for t2.
    let (t, _) = log(&w.home, &["--target", "t2", "-n", "1"]);
    assert!(t.lines().nth(1).unwrap().contains(" failed "), "{t}");
    assert!(t.contains("unreachable: "), "{t}");
    let (json, _) = log(&w.home, &["--json"]);
    let recs: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 4);
    assert!(recs.iter().all(|r| r["operation"] == "apply"));

    // target list: the last apply, text and JSON.
    let out = w.home.offsync(["target", "list"]).output().unwrap();
    let list = stdout(&out);
    assert!(
        list.lines().next().unwrap().ends_with("LAST APPLY (UTC)"),
        "{list}"
    );
    assert!(list.lines().nth(1).unwrap().ends_with("Z ok"), "{list}");
    assert!(list.lines().nth(2).unwrap().ends_with("Z failed"), "{list}");
    let out = w
        .home
        .offsync(["target", "list", "--json"])
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["last_apply"]["status"], "ok");
    assert_eq!(rows[1]["last_apply"]["status"], "failed");
    assert!(
        rows[0]["last_apply"]["timestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // An unknown --target is bad input.
    let out = w
        .home
        .offsync(["status", "--target", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("--target \"nope\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn target_list_says_never_before_any_apply() {
    let w = World::fast(1);
    let out = w.home.offsync(["target", "list"]).output().unwrap();
    assert!(
        stdout(&out).lines().nth(1).unwrap().ends_with("  never"),
        "{}",
        stdout(&out)
    );
    let out = w
        .home
        .offsync(["target", "list", "--json"])
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["last_apply"], Value::Null);
}
