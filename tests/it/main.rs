//! One integration binary: the real `offsync` against a real sshd, rsync and rrsync on
//! loopback. Each test has its own temp dirs and its own sshd.

mod apply;
mod bad_input;
mod cli;
mod security;
mod setup;
mod util;
