//! Man pages generated from the clap definition, so `man/` can never drift from `--help`.
//!
//! `offsync.1` also carries what clap does not know: CONFIGURATION (every `config.yaml` key),
//! FILES, ENVIRONMENT, EXIT STATUS and EXAMPLES ([`CONFIG_KEYS`], `extra_sections`).
//!
//! `man/` is committed; a unit test renders every page in memory and fails when a file differs
//! (run `scripts/gen-man` to regenerate).

use clap::CommandFactory;

/// Every page as `(file name, roff bytes)`: `offsync.1` and one per (nested) subcommand.
pub fn pages() -> Vec<(String, Vec<u8>)> {
    fn walk(cmd: clap::Command, out: &mut Vec<(String, Vec<u8>)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, out);
        }
        let man =
            clap_mangen::Man::new(cmd).source(format!("offsync {}", env!("CARGO_PKG_VERSION")));
        let mut buf = Vec::new();
        man.render(&mut buf)
            .expect("rendering to memory cannot fail");
        if man.get_filename() == "offsync.1" {
            // Before VERSION (clap's last section), where man pages usually have them.
            let at = find(&buf, b".SH VERSION").unwrap_or(buf.len());
            let tail = buf.split_off(at);
            render_extra(&mut buf);
            buf.extend_from_slice(&tail);
        }
        out.push((man.get_filename(), buf));
    }
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, &mut out);
    out.sort();
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One paragraph of an extra section: running text, a tagged item (`.TP`), or a literal
/// example (`.nf`).
enum Para {
    Text(&'static str),
    Item(&'static str, &'static str),
    Example(&'static str),
}
use Para::{Example, Item, Text};

/// Every `config.yaml` key: (key, meaning and default). Keys under `targets[]` and
/// `mirrors[]` are per entry. The unit test `every_config_key_is_documented` fails when a key
/// of `config::Config` is missing here: add its row (keep the order of the file).
pub const CONFIG_KEYS: &[(&str, &str)] = &[
    ("version", "Format version; 1 (the default)."),
    (
        "source",
        "Absolute path of the directory to push (set by `init --source`).",
    ),
    (
        "delete",
        "Delete target-only paths on every apply, as `apply --delete` does. Default false.",
    ),
    (
        "overwrite",
        "Overwrite files that differ on a target. Default true.",
    ),
    (
        "max_delete",
        "Refuse an apply that would delete more than N paths on a target; `--max-delete` overrides it. Default: refuse deleting over half of a target's paths, or anything when the source has no files.",
    ),
    (
        "verify",
        "Verify every target after apply: true (default), false, or the Python offsync's words hash, checksum (= true), none, off (= false).",
    ),
    (
        "exclude",
        "List of gitignore-style patterns excluded from planning, transfer and verification, after the built-in `.git/` and `.~tmp~/` (see README, Excludes). Default empty.",
    ),
    (
        "concurrency",
        "How many targets to work on at once, at least 1. Default 8.",
    ),
    (
        "check",
        "How SSH targets are compared when planning: checksum (default; reads every file on both ends) or quick (size and mtime). `--check` overrides it.",
    ),
    (
        "layout",
        "How SSH targets hold the tree: in-place (default) or releases (`releases/<id>/` trees and a `current` symlink switched atomically).",
    ),
    (
        "keep",
        "Releases a `releases` target keeps, `current` included, at least 1. Default 5.",
    ),
    (
        "targets",
        "The SSH targets, one entry per `target add`, kept sorted by name; the keys below.",
    ),
    (
        "targets[].name",
        "Unique name used with `--target`. Default: the host.",
    ),
    (
        "targets[].login",
        "`user@host` as given to `target add`, or a bare host alias that ssh resolves through `~/.ssh/config` (`ssh -G`) on every run.",
    ),
    (
        "targets[].user",
        "Remote user (redundant with login; kept for the Python offsync).",
    ),
    (
        "targets[].host",
        "Remote host (redundant with login; kept for the Python offsync).",
    ),
    (
        "targets[].port",
        "SSH port. Default 22, or what ~/.ssh/config says.",
    ),
    (
        "targets[].remote_path",
        "The directory `link --path` allowed on the target (required).",
    ),
    (
        "targets[].rrsync",
        "rrsync on the target as `link` printed it (a path, or true from the Python offsync); for the record.",
    ),
    (
        "targets[].fingerprint",
        "Pinned host key fingerprint (`SHA256:...`); the key itself is in known_hosts.",
    ),
    (
        "targets[].no_delete",
        "The target refuses deletions (`link --no-delete`, rrsync -no-del); found by the probe. Default false.",
    ),
    (
        "targets[].check",
        "This target's comparison mode (overrides the top-level check).",
    ),
    (
        "targets[].layout",
        "This target's layout (overrides the top-level layout).",
    ),
    (
        "targets[].keep",
        "Releases this target keeps (overrides the top-level keep).",
    ),
    (
        "targets[].exclude",
        "More patterns excluded for this target only, after the top-level exclude list (same rules); part of the target's plan. Default empty.",
    ),
    (
        "mirrors",
        "Encrypted mirrors (`mirror add`), kept sorted by name; targets like the others. They hold no secrets.",
    ),
    (
        "targets[].ssh_options",
        "Map of extra ssh options for this target, from an allow-list: AddressFamily, BindAddress, BindInterface, Ciphers, Compression, ConnectionAttempts, ConnectTimeout, IPQoS, KexAlgorithms, MACs, ProxyJump, RekeyLimit, ServerAliveCountMax, ServerAliveInterval, TCPKeepAlive. Security options stay forced; any other key is refused (exit 64).",
    ),
    (
        "mirrors[].name",
        "Unique name used with `--target` (not shared with a target).",
    ),
    (
        "mirrors[].url",
        "`s3://BUCKET/PREFIX`, `file:///DIR` or an absolute directory.",
    ),
    (
        "mirrors[].endpoint",
        "S3 endpoint of an S3-compatible store (MinIO, Garage). Default: AWS_ENDPOINT_URL, else AWS.",
    ),
    (
        "mirrors[].region",
        "S3 region. Default: AWS_REGION, else us-east-1.",
    ),
    (
        "mirrors[].writers",
        "Other controllers whose snapshot signatures this controller accepts (`ssh-ed25519 ...` lines; managed with `mirror writers`).",
    ),
    (
        "mirrors[].uploads",
        "Object uploads in flight at once during apply, 1 to 64. Default 16 on S3, 8 for a directory. Objects over 1 MiB go at most 4 at a time and multipart objects (over 8 MiB) at most 2, which bounds memory.",
    ),
];

/// The sections of `offsync.1` that clap does not know about.
fn extra_sections() -> Vec<(&'static str, Vec<Para>)> {
    let mut config = vec![Text(
        "offsync reads $OFFSYNC_HOME/config.yaml (YAML; written by init, target add and mirror add, \
which keep it sorted and mode 0600; edit it by hand freely). An unknown key is an error \
naming its line and column. Keys:",
    )];
    config.extend(CONFIG_KEYS.iter().map(|(k, v)| Item(k, v)));
    config.push(Example(
        "version: 1\nsource: /srv/app\nexclude: [\"*.log\", \"tmp/\"]\ntargets:\n  - name: web1\n    login: deploy@web1\n    remote_path: /srv/app\n    fingerprint: SHA256:...\n    exclude: [\"media/\"]\nmirrors:\n  - name: usb\n    url: /mnt/usb/offsync",
    ));
    vec![
        ("CONFIGURATION", config),
        (
            "FILES",
            vec![
                Text("Under $OFFSYNC_HOME (default ~/.offsync; directories 0700, files 0600):"),
                Item("config.yaml", "The configuration (see CONFIGURATION)."),
                Item(
                    "id_ed25519, id_ed25519.pub",
                    "The controller's dedicated SSH key (init); it also signs mirror snapshots.",
                ),
                Item(
                    "known_hosts",
                    "Pinned host keys of the targets (target add).",
                ),
                Item(
                    "age-identity.txt",
                    "The controller's age identity for mirrors (mirror add).",
                ),
                Item(
                    "operations.log",
                    "One JSON record per apply, pull, rollback and restore; rotated to operations.log.1 ... .5 at 16 MiB (read by log and status).",
                ),
                Item(
                    "last-plan.json",
                    "The last plan `plan` showed, which `apply` reuses when it still holds (a cache).",
                ),
                Item(
                    "apply.lock",
                    "Held while an apply runs: one apply per $OFFSYNC_HOME at a time.",
                ),
                Item(
                    "cache/hashes-*.bin",
                    "Hash cache per source directory: unchanged files are not read again.",
                ),
                Item(
                    "markers/TARGET, applied/TARGET",
                    "Which marker identifies each target's directory, and whether it was ever applied to.",
                ),
                Item(
                    "releases/TARGET.json",
                    "The releases of `layout: releases` targets.",
                ),
                Item(
                    "mirror-state/",
                    "Per mirror: the newest generation seen and pinned writer keys (rollback protection).",
                ),
                Item(
                    "tmp/",
                    "Scratch files of running commands (ssh control sockets).",
                ),
            ],
        ),
        (
            "ENVIRONMENT",
            vec![
                Item(
                    "OFFSYNC_HOME",
                    "The state directory, as --home (default ~/.offsync).",
                ),
                Item(
                    "OFFSYNC_IDENTITY_FILE",
                    "The age identity for `pull` and `mirror restore`, as --identity.",
                ),
                Item(
                    "OFFSYNC_TRUSTED_WRITERS",
                    "Writer keys `pull` trusts, one per line, as --trust.",
                ),
                Item(
                    "OFFSYNC_LOG_ROTATE_BYTES",
                    "Size at which operations.log is rotated (default 16 MiB; for tests and small disks).",
                ),
                Item(
                    "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE",
                    "S3 credentials (never stored in config.yaml); also web identity and container credentials (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_CONTAINER_CREDENTIALS_*).",
                ),
                Item(
                    "AWS_REGION, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3",
                    "S3 region and endpoint when the mirror's config and flags name none.",
                ),
                Item("HOME", "Where ~/.offsync and ~/.ssh are."),
                Item(
                    "_OFFSYNC_COMPLETE",
                    "Internal: set by the shell code of `offsync completions` to ask for completions.",
                ),
            ],
        ),
        (
            "EXIT STATUS",
            vec![
                Item(
                    "0",
                    "Success; with --detailed-exitcode (plan, apply --dry-run, pull, status) and for verify: nothing to change.",
                ),
                Item(
                    "1",
                    "An error: a command, a target or the environment failed (per-target errors are reported and the other targets still run).",
                ),
                Item(
                    "2",
                    "Changes pending: plan/status --detailed-exitcode, verify with a drifted target, pull --detailed-exitcode when DEST changed. Never an error.",
                ),
                Item(
                    "64",
                    "Bad command line or input (a flag, a config value, a plan file, an s3:// mirror in a build without S3); nothing was changed.",
                ),
                Item(
                    "128+N",
                    "Stopped by signal N: 130 SIGINT, 143 SIGTERM, 129 SIGHUP (an `interrupted` record is logged).",
                ),
            ],
        ),
        (
            "EXAMPLES",
            vec![
                Text("Set up a controller and one target, then push:"),
                Example(
                    "offsync init --source /srv/app\n# on the target:\noffsync link --key 'ssh-ed25519 AAAA... offsync@controller' --path /srv/app\n# back on the controller, the line link printed:\noffsync target add deploy@web1 --path /srv/app --fingerprint SHA256:...\noffsync plan\noffsync apply --yes\noffsync verify",
                ),
                Text("Review a plan, then apply exactly that plan:"),
                Example("offsync plan --out plan.json\noffsync apply plan.json --delete"),
                Text("An encrypted mirror on a USB disk, and a host that pulls from it:"),
                Example(
                    "offsync mirror add usb /mnt/usb/offsync\noffsync apply --target usb --yes\noffsync pull /mnt/usb/offsync /srv/app --trust ~/controller.pub",
                ),
                Text("Shell completion (target names complete from the config):"),
                Example(
                    "source <(offsync completions bash)     # in ~/.bashrc\noffsync completions fish | source       # in ~/.config/fish/config.fish",
                ),
            ],
        ),
    ]
}

/// Roff for the extra sections.
fn render_extra(out: &mut Vec<u8>) {
    // Plain text → roff: backslashes and hyphens escaped, no line may start a request.
    fn esc(s: &str) -> String {
        s.replace('\\', "\\e")
            .replace('-', "\\-")
            .lines()
            .map(|l| {
                if l.starts_with('.') || l.starts_with('\'') {
                    format!("\\&{l}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
    let mut s = String::new();
    for (title, paras) in extra_sections() {
        s.push_str(&format!(".SH \"{title}\"\n"));
        for p in paras {
            match p {
                Text(t) => s.push_str(&format!(".PP\n{}\n", esc(t))),
                Item(tag, t) => s.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", esc(tag), esc(t))),
                Example(t) => s.push_str(&format!(".PP\n.RS 4\n.nf\n{}\n.fi\n.RE\n", esc(t))),
            }
        }
    }
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Fails when `man/` is stale. With `OFFSYNC_BLESS_MAN=1` it rewrites `man/` instead.
    #[test]
    fn man_pages_are_fresh() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        let pages = super::pages();
        if std::env::var_os("OFFSYNC_BLESS_MAN").is_some() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in &pages {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
            return;
        }
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        on_disk.sort();
        let names: Vec<String> = pages.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            on_disk, names,
            "man/ has other pages than the CLI; run scripts/gen-man"
        );
        for (name, bytes) in &pages {
            let current = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(
                current == *bytes,
                "man/{name} is stale; run scripts/gen-man"
            );
        }
        assert!(names.contains(&"offsync-target-add.1".to_string()));
    }

    /// Every key `config.yaml` can hold has a CONFIGURATION row, and every row is a key.
    #[test]
    fn every_config_key_is_documented() {
        use crate::config::Config;
        // A config with every optional key set, so that serialisation shows them all.
        let text = "version: 1\nsource: /s\ndelete: true\noverwrite: false\nmax_delete: 3\nverify: false\nexclude: [a]\nconcurrency: 2\ncheck: quick\nlayout: releases\nkeep: 2\ntargets:\n  - name: t\n    login: u@h\n    user: u\n    host: h\n    port: 2\n    remote_path: /r\n    rrsync: /usr/bin/rrsync\n    fingerprint: SHA256:x\n    no_delete: true\n    check: quick\n    layout: releases\n    keep: 2\n    exclude: [b]\n    ssh_options: {ConnectTimeout: 5}\nmirrors:\n  - name: m\n    url: /m\n    endpoint: http://e\n    region: r\n    writers: [w]\n    uploads: 4\n";
        let config = Config::parse(text.as_bytes(), std::path::Path::new("config.yaml")).unwrap();
        let json = serde_json::to_value(&config).unwrap();
        let mut keys = Vec::new();
        for (k, v) in json.as_object().unwrap() {
            keys.push(k.clone());
            if let Some(first) = v
                .as_array()
                .and_then(|a| a.first())
                .and_then(|e| e.as_object())
            {
                keys.extend(first.keys().map(|sub| format!("{k}[].{sub}")));
            }
        }
        let documented: Vec<&str> = super::CONFIG_KEYS.iter().map(|(k, _)| *k).collect();
        for k in &keys {
            assert!(
                documented.contains(&k.as_str()),
                "config key {k} has no row in man::CONFIG_KEYS"
            );
        }
        let (_, ssh_row) = super::CONFIG_KEYS
            .iter()
            .find(|(k, _)| *k == "targets[].ssh_options")
            .unwrap();
        for opt in crate::ssh::SSH_OPTIONS_ALLOWED {
            assert!(
                ssh_row.contains(opt),
                "the ssh_options row does not list {opt}"
            );
        }
        for d in &documented {
            assert!(
                keys.iter().any(|k| k == d),
                "man::CONFIG_KEYS documents {d}, which config.yaml does not have"
            );
        }
    }
}
