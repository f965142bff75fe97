//! `residency`: the [`crate::tenants`] scenario (10,000 clinics provisioned through the admin API,
//! 1,000,000 patients with an open customer-service window, an idle period, then an active
//! phase) under the name issue #9 gives it, with a JSON result and a Markdown summary of the
//! target: the gateway's resident memory stays ≤ 1 GiB.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::kit::{self, Check, RunInfo};
use crate::tenants::TenantsReport;

#[derive(Debug, Clone, Serialize)]
pub struct ResidencyFile<'a> {
    pub scenario: &'static str,
    pub run: &'a RunInfo,
    pub checks: Vec<Check>,
    pub report: &'a TenantsReport,
}

/// Peak gateway RSS over every snapshot (VmHWM when the kernel gave it).
pub fn peak_rss_mib(r: &TenantsReport) -> Option<f64> {
    r.memory
        .iter()
        .filter_map(|m| m.gateway_hwm_mib.or(m.gateway_rss_mib))
        .reduce(f64::max)
}

pub fn checks(r: &TenantsReport) -> Vec<Check> {
    let peak = peak_rss_mib(r);
    let with_windows = r
        .memory
        .iter()
        .find(|m| m.label.contains("window"))
        .and_then(|m| m.gateway_rss_mib);
    vec![
        Check::new(
            format!(
                "residency: {} clinics, {} open windows",
                kit::thousands(r.provision.provisioned as u64),
                kit::thousands(r.windows_phase.opened as u64)
            ),
            format!("≤ {} MiB RSS", r.max_rss_mib),
            format!(
                "peak {} (with the windows open {})",
                peak.map_or("n/a".into(), |p| format!("{p:.0} MiB")),
                with_windows.map_or("n/a".into(), |p| format!("{p:.0} MiB"))
            ),
            Some(peak.is_some_and(|p| p <= r.max_rss_mib as f64)),
        ),
        Check::new(
            "clinics provisioned / windows opened",
            format!(
                "{} / {}",
                kit::thousands(r.clinics as u64),
                kit::thousands(r.windows as u64)
            ),
            format!(
                "{} in {:.1} s / {} in {:.1} s ({} windows/s)",
                kit::thousands(r.provision.provisioned as u64),
                r.provision.wall_s,
                kit::thousands(r.windows_phase.opened as u64),
                r.windows_phase.wall_s,
                kit::thousands(r.windows_phase.windows_per_sec as u64)
            ),
            Some(r.provision.provisioned >= r.clinics && r.windows_phase.opened >= r.windows),
        ),
        Check::new(
            "active phase: lost / duplicated at the sandbox",
            "0 / 0",
            format!(
                "{} / {} ({} accepted, {:.0}/s, p99 {:.1} ms)",
                r.active.missing,
                r.active.duplicates,
                kit::thousands(r.active.accepted as u64),
                r.active.accept_per_sec,
                r.active.latency.p99_ms
            ),
            Some(r.active.missing == 0 && r.active.duplicates == 0),
        ),
    ]
}

pub fn markdown(r: &TenantsReport, run: &RunInfo) -> String {
    let mut s = format!(
        "## residency (`tenants`)\n\n{}\n{}",
        run.markdown(),
        kit::checks_table(&checks(r))
    );
    s.push_str("\n| snapshot | gateway RSS | peak (VmHWM) | Redis used | resident actors |\n|---|---|---|---|---|\n");
    for m in &r.memory {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:?} |\n",
            m.label,
            m.gateway_rss_mib
                .map_or("n/a".into(), |v| format!("{v:.0} MiB")),
            m.gateway_hwm_mib
                .map_or("n/a".into(), |v| format!("{v:.0} MiB")),
            m.redis_used_memory_mib
                .map_or("n/a".into(), |v| format!("{v:.0} MiB")),
            m.resident_actors
        ));
    }
    if !r.problems.is_empty() {
        s.push_str(&format!("\nProblems: {}\n", r.problems.join("; ")));
    }
    s
}

/// Writes `residency.json` (the tenants report with the run's facts and checks) and
/// `residency.md` under `dir`.
pub fn save(dir: &Path, r: &TenantsReport, run: &RunInfo) -> Result<()> {
    let file = ResidencyFile {
        scenario: "residency",
        run,
        checks: checks(r),
        report: r,
    };
    kit::save(dir, "residency", &file, &markdown(r, run))
}
