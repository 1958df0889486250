//! Process facts from `/proc` and signals to process groups.

use std::fs;

use rustix::process::{Pid, Signal, kill_process_group};

use crate::error::ExecError;

/// `/proc` reports times in clock ticks of `USER_HZ`, which the Linux ABI fixes at 100 on every
/// architecture the kernel exports to user space.
pub(crate) const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` the executor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: u32,
    pub state: char,
    pub pgrp: u32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    /// Field 22: when the process started, in ticks since boot. Together with the pid it names
    /// one process for the life of the machine (a reused pid has a later start time).
    pub starttime: u64,
}

impl ProcStat {
    /// Own plus waited-for children's CPU ticks.
    pub fn total_ticks(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }

    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let num = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        pgrp: u32::try_from(num(5)?).ok()?,
        utime: num(14)?,
        stime: num(15)?,
        cutime: num(16)?,
        cstime: num(17)?,
        starttime: num(22)?,
    })
}

pub(crate) fn read_stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

pub(crate) fn read_self_stat() -> Option<ProcStat> {
    let text = fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(std::process::id(), &text)
}

/// True when `pid` is a live (not zombie) process that started at `starttime`.
pub(crate) fn is_alive(pid: u32, starttime: u64) -> bool {
    read_stat(pid).is_some_and(|s| s.starttime == starttime && s.is_running())
}

/// Every process (zombies included) whose process group is `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .filter(|s| s.pgrp == pgid)
        .collect()
}

/// True while a process of group `pgid` is running (zombies do not count: they hold no
/// resources and may linger when the reaper of this container does not reap).
pub(crate) fn group_alive(pgid: u32) -> bool {
    group_members(pgid).iter().any(ProcStat::is_running)
}

/// Sum of own and children's CPU ticks over the group.
pub(crate) fn group_ticks(pgid: u32) -> u64 {
    group_members(pgid).iter().map(ProcStat::total_ticks).sum()
}

/// Sends `signal` to every process of group `pgid`. A group that no longer exists is not an
/// error.
pub(crate) fn signal_group(pgid: u32, signal: GroupSignal) -> Result<(), ExecError> {
    let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return Err(ExecError::Signal {
            pgid,
            signal: signal.name(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a valid pid"),
        });
    };
    let sig = match signal {
        GroupSignal::Term => Signal::TERM,
        GroupSignal::Kill => Signal::KILL,
    };
    match kill_process_group(pid, sig) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::SRCH => Ok(()),
        Err(e) => Err(ExecError::Signal {
            pgid,
            signal: signal.name(),
            source: e.into(),
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupSignal {
    Term,
    Kill,
}

impl GroupSignal {
    fn name(self) -> &'static str {
        match self {
            Self::Term => "SIGTERM",
            Self::Kill => "SIGKILL",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_name() {
        let text = "4242 (we ird) (x)) S 1 4240 4240 0 -1 4194560 10 0 0 0 7 3 2 1 20 0 1 0 987654 1000 10";
        let s = parse_stat(4242, text).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.pgrp, 4240);
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (7, 3, 2, 1));
        assert_eq!(s.total_ticks(), 13);
        assert_eq!(s.starttime, 987654);
        assert!(s.is_running());
    }

    #[test]
    fn rejects_truncated_stat() {
        assert_eq!(parse_stat(1, "1 (init) S 0 1"), None);
        assert_eq!(parse_stat(1, "no parens at all"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = read_self_stat().unwrap();
        assert!(is_alive(me.pid, me.starttime));
        assert!(!is_alive(me.pid, me.starttime + 1));
    }
}
