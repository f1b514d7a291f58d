//! Placeholder until issue #3 lands: the workspace layout reserves this crate.
fn main() -> std::process::ExitCode {
    eprintln!("analyzer: not implemented yet (tracked in issue #3)");
    std::process::ExitCode::FAILURE
}
