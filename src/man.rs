//! Man pages generated from the clap definition, so `man/` can never drift from `--help`.
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
        out.push((man.get_filename(), buf));
    }
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, &mut out);
    out.sort();
    out
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
}
