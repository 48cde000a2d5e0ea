//! billing's allocator is mimalloc compiled with transparent huge pages off (.cargo/config.toml): it calls
//! `prctl(PR_SET_THP_DISABLE)` before billing's first allocation. If the compile-time default were lost (a build
//! outside this workspace's cargo configuration), an idle billing would hold twice the memory on a kernel whose THP
//! setting is `always`; this test is what notices.

mod common;

use common::{TestApp, TestResult};

#[test]
fn transparent_huge_pages_are_off_for_billing() -> TestResult {
    let app = TestApp::start()?;
    let pid = app.service.pid().ok_or("billing has no pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .ok_or("/proc/<pid>/status has no THP_enabled line (Linux 5.0 or later has one)")?;
    assert_eq!(
        line.split_whitespace().nth(1),
        Some("0"),
        "billing runs with transparent huge pages allowed ({line}): mimalloc was built without \
         -DMI_DEFAULT_ALLOW_THP=0 (.cargo/config.toml)"
    );
    Ok(())
}
