//! A process known for good: its pid and when it started, since a pid alone may name
//! another process once the first has gone.

/// When process `pid` started (`/proc/PID/stat` field 22, clock ticks after boot);
/// `None` when there is no such process. Anyone may read it, where a process's
/// environment is shown to its user and root only (and to nobody but root once it made
/// itself undumpable, as the agent does).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which may hold spaces and parentheses: field 3 onwards.
    stat.rsplit_once(") ")?.1.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_keeps_its_start_time_and_a_gone_one_has_none() {
        let me = std::process::id();
        let first = start_time(me).expect("this process");
        assert_eq!(start_time(me), Some(first));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(start_time(pid), None, "reaped");
    }
}
