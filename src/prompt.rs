//! Questions to the operator. Only asked on a terminal; without one, callers fail with a
//! message that names the flag to pass instead (never block a script waiting for input).

use anyhow::{Context as _, Result};

/// Ask a yes/no question (default no).
pub fn confirm(question: &str) -> Result<bool> {
    dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()
        .context("cannot read the answer from the terminal")
}

/// Ask for the literal word `yes` (used before trusting an unpinned host key).
pub fn typed_yes(question: &str) -> Result<bool> {
    let answer: String = dialoguer::Input::new()
        .with_prompt(question)
        .allow_empty(true)
        .interact_text()
        .context("cannot read the answer from the terminal")?;
    Ok(answer.trim() == "yes")
}

/// Read one line of text (a pasted public key).
pub fn line(question: &str) -> Result<String> {
    dialoguer::Input::<String>::new()
        .with_prompt(question)
        .interact_text()
        .context("cannot read from the terminal")
}
