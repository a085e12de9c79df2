//! A child process that is killed when dropped, so a failing test leaves
//! nothing running.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running child process with its output in a log file.
pub struct Proc {
    child: Option<Child>,
    name: String,
}

impl Proc {
    /// Starts `program args` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[&str], log: &Path, env: &[(&str, &str)]) -> Proc {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open log");
        let err = out.try_clone().expect("clone log handle");
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Proc { child: Some(child), name: name.to_string() }
    }

    /// Kills the process at once (SIGKILL), as a crash would end it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// CPU time it has used so far (user + system), from `/proc`; `None`
    /// once it has ended.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces, so split
        // after its closing parenthesis): utime and stime are the 12th and
        // 13th, in clock ticks; Linux reports /proc times at USER_HZ = 100.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(std::time::Duration::from_millis(ticks * 10))
    }

    /// Its name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
