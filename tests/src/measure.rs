//! What the benches measure a process by: CPU seconds and resident memory from `/proc`, their
//! tunables from the environment, and figures rounded for the reports; and the engine's inputs
//! for generated records, as the benches feed them.

/// Clock ticks per second of `/proc/*/stat`'s CPU times.
const TICKS_PER_SECOND: f64 = 100.0;

/// The environment variable `name` as a number, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + sys) of this process, all threads, from `/proc/self/stat`.
pub fn process_cpu() -> f64 {
    stat_cpu("/proc/self/stat")
}

/// CPU seconds (user + sys) of the calling thread.
pub fn thread_cpu() -> f64 {
    stat_cpu("/proc/thread-self/stat")
}

/// CPU seconds (user + sys) of process `pid`, all threads; 0 once it is gone.
pub fn pid_cpu(pid: u32) -> f64 {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// Peak resident memory (`VmHWM`) of process `pid`, in MiB; 0 once it is gone.
pub fn pid_peak_rss_mib(pid: u32) -> f64 {
    status_mib_of(&format!("/proc/{pid}/status"), "VmHWM:")
}

fn stat_cpu(path: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Some(rest) = text.rsplit_once(") ").map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After "(comm) ": state is field 3, utime field 14, stime field 15.
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

/// This process's resident memory now (`VmRSS`), in MiB.
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// This process's peak resident memory (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

fn status_mib(field: &str) -> f64 {
    status_mib_of("/proc/self/status", field)
}

fn status_mib_of(path: &str, field: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `x` rounded to `places` decimals.
pub fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

/// The projector engine's inputs for generated records: each on its kind's input topic,
/// partition 0, numbered on from `offsets` (the next offset per kind: decision, approval,
/// registry), which it advances.
pub fn inputs<'a>(
    records: &'a [aispm_tools::records::Generated],
    topics: &'a aispm_schemas::Topics,
    offsets: &mut [i64; 3],
) -> Vec<aispm_projector::Input<'a>> {
    use aispm_schemas::InputKind;
    records
        .iter()
        .map(|r| {
            let o = &mut offsets[match r.kind {
                InputKind::Decision => 0,
                InputKind::Approval => 1,
                InputKind::Registry => 2,
            }];
            *o += 1;
            aispm_projector::Input::new(
                r.kind.topic(topics),
                0,
                *o - 1,
                r.tenant.as_bytes(),
                &r.bytes,
            )
        })
        .collect()
}
