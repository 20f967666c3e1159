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

/// The operator's answer to "trust this host key?".
#[derive(Debug, PartialEq, Eq)]
pub enum Trust {
    Yes,
    No,
    /// A pasted fingerprint that is not the one the host offers.
    Mismatch(String),
}

/// Ask whether to trust host key `offered` (`SHA256:…`). Accepts `yes`, `no`, or the
/// fingerprint itself pasted from `offsync link`'s output (which must match exactly); anything
/// else asks again, a few times, then counts as `no`.
pub fn trust_host_key(offered: &str) -> Result<Trust> {
    for _ in 0..3 {
        let answer: String = dialoguer::Input::new()
            .with_prompt(
                "Does this match the fingerprint `offsync link` printed on the target? Type yes, no, or paste that fingerprint",
            )
            .allow_empty(true)
            .interact_text()
            .context("cannot read the answer from the terminal")?;
        match classify_trust_answer(&answer, offered) {
            Some(t) => return Ok(t),
            None => eprintln!("please answer yes, no, or paste a SHA256:… fingerprint"),
        }
    }
    Ok(Trust::No)
}

/// `None` for an answer that is none of yes, no or a fingerprint.
fn classify_trust_answer(answer: &str, offered: &str) -> Option<Trust> {
    let a = answer.trim();
    match a.to_ascii_lowercase().as_str() {
        "yes" => Some(Trust::Yes),
        "no" | "n" => Some(Trust::No),
        _ => match crate::keys::parse_fingerprint(a) {
            Ok(fp) if fp == offered => Some(Trust::Yes),
            Ok(fp) => Some(Trust::Mismatch(fp)),
            Err(_) => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_answers() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert_eq!(classify_trust_answer(" yes\n", fp), Some(Trust::Yes));
        assert_eq!(classify_trust_answer("no", fp), Some(Trust::No));
        assert_eq!(classify_trust_answer(fp, fp), Some(Trust::Yes));
        let other = "SHA256:AAAAztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert_eq!(
            classify_trust_answer(other, fp),
            Some(Trust::Mismatch(other.to_string()))
        );
        for again in ["", "y", "ok", "yes please", "SHA256:"] {
            assert_eq!(classify_trust_answer(again, fp), None, "{again:?}");
        }
    }
}
