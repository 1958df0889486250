//! Supervisor of one attempt: `plinth-exec-supervisor <attempt-dir>`. Started by
//! `plinth_exec::Executor`; see `plinth_exec::supervisor`.

fn main() -> std::process::ExitCode {
    plinth_exec::supervisor::main(std::env::args_os().skip(1))
}
