//! `idle`: the DaemonSet's long-running container, so a new image rolls out node by node. The image has no
//! shell and no `sleep`; this waits for SIGTERM or SIGINT and exits 0.

use std::process::ExitCode;

pub fn run() -> ExitCode {
    // Blocked signals are queued even for PID 1 (whose default actions the kernel ignores), and sigwait takes
    // them off the queue: no handler runs.
    // SAFETY: plain libc calls on a sigset_t owned here.
    let signal = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        println!("mount-hints-hook: idle until SIGTERM or SIGINT");
        let mut signal = 0;
        libc::sigwait(&set, &mut signal);
        signal
    };
    println!("mount-hints-hook: signal {signal}, exiting");
    ExitCode::SUCCESS
}
