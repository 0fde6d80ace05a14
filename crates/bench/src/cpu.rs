//! CPU time used by this process or this thread, read from `/proc` (Linux). On a shared
//! machine, CPU per operation moves much less with other people's load than throughput does,
//! so the report gives both.

/// `/proc` counts CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100 for its
/// user-space interface on every architecture medvault builds for.
const TICKS_PER_S: f64 = 100.0;

/// User plus system CPU seconds of every thread of this process so far (including threads
/// that have exited), or `None` off Linux.
pub fn process_s() -> Option<f64> {
    read("/proc/self/stat")
}

/// User plus system CPU seconds of the calling thread so far, or `None` off Linux.
pub fn thread_s() -> Option<f64> {
    read("/proc/thread-self/stat")
}

/// User plus system CPU seconds of this process's children that have ended and been waited
/// for (a wrk run, once `Command::output` returns), or `None` off Linux.
pub fn children_s() -> Option<f64> {
    parse_stat_fields(&std::fs::read_to_string("/proc/self/stat").ok()?, 13)
}

fn read(path: &str) -> Option<f64> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// Fields 14 and 15 (`utime`, `stime`) of a `stat` line; the command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted after the
/// last `)`.
fn parse_stat(stat: &str) -> Option<f64> {
    parse_stat_fields(stat, 11)
}

/// Two consecutive tick counts, `skip` fields after the state (field 3): 11 for `utime` and
/// `stime` (14, 15), 13 for `cutime` and `cstime` (16, 17).
fn parse_stat_fields(stat: &str, skip: usize) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(skip);
    let user_ticks: u64 = fields.next()?.parse().ok()?;
    let system_ticks: u64 = fields.next()?.parse().ok()?;
    Some((user_ticks + system_ticks) as f64 / TICKS_PER_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_summed() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 9 0 1 1 1";
        assert_eq!(parse_stat(stat), Some(3.0));
        let waited = "4242 (wrk) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 7 3 20 0 9 0 1 1 1";
        assert_eq!(parse_stat_fields(waited, 13), Some(0.1), "cutime 7 + cstime 3 ticks");
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn proc_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(process_s().is_some());
            assert!(thread_s().is_some());
            assert!(children_s().is_some());
        }
    }
}
