//! Terminal progress on stderr: spinners and per-target transfer bars, shown only when stderr
//! is a terminal (never in pipes, CI logs or `--json` runs).

use std::io::IsTerminal;

/// A spinner on stderr when it is a terminal; nothing otherwise.
pub fn spinner(msg: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(pb)
}

/// One bar per target for transfers, on a terminal only.
pub struct TransferBars {
    multi: Option<indicatif::MultiProgress>,
}

impl TransferBars {
    /// Bars when `show` and stderr is a terminal.
    pub fn new(show: bool) -> TransferBars {
        TransferBars {
            multi: (show && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new),
        }
    }
}

impl crate::engine::Progress for TransferBars {
    fn begin(&self, target: &str, paths: u64) -> Box<dyn crate::engine::TargetProgress> {
        let Some(m) = &self.multi else {
            return Box::new(());
        };
        let pb = m.add(indicatif::ProgressBar::new(paths));
        pb.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} paths")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_prefix(target.to_string());
        Box::new(pb)
    }
}

impl crate::engine::TargetProgress for indicatif::ProgressBar {
    fn update(&self, done: u64) {
        self.set_position(done);
    }
    fn finish(&self) {
        self.finish_and_clear();
    }
}
