//! Command output on stdout, without panics on a closed pipe.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`offsync mirror ls | head -1`):
//! Rust ignores SIGPIPE, so the write fails with `EPIPE` and the macro turns that into a panic.
//! Commands print through [`outln!`](crate::outln) and [`out!`](crate::out) instead: they write
//! to the locked stdout and return the `io::Result`, which commands pass on with `?`. `lib.rs`
//! maps a broken pipe anywhere in an error chain to exit 0 with nothing on stderr, as `head`
//! users expect (ripgrep does the same). Diagnostics keep using `eprintln!` (stderr).

/// `println!` that returns `std::io::Result<()>` instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        writeln!(::std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` that returns `std::io::Result<()>` instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        write!(::std::io::stdout().lock(), $($arg)*)
    }};
}

#[cfg(test)]
mod tests {
    #[test]
    fn macros_return_io_results() {
        let r: std::io::Result<()> = crate::outln!();
        assert!(r.is_ok());
        let r: std::io::Result<()> = crate::out!("{}", "");
        assert!(r.is_ok());
    }
}
