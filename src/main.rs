//! The `offsync` binary: parse, run, print one error, exit. Everything else lives in the library.
fn main() -> std::process::ExitCode {
    offsync::main_entry()
}
