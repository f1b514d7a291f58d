//! Placeholder until issue #4 lands: the workspace layout reserves this crate.
fn main() -> std::process::ExitCode {
    eprintln!("warmer: not implemented yet (tracked in issue #4)");
    std::process::ExitCode::FAILURE
}
