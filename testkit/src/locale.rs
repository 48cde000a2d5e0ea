//! Locales for test servers, compiled into a directory of the harness's own rather than installed on the machine.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

const HINT: &str = "localedef and the locale sources come with Debian's `locales` package: \
                    run scripts/install-postgres.sh (it installs them)";

/// A directory to give as `LOCPATH` in which `name` (such as `ru_RU.UTF-8`) exists, compiled on first use.
pub fn compiled(name: &str) -> Result<PathBuf, String> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (language, charset) =
        name.split_once('.').ok_or_else(|| format!("locale {name:?} should look like ru_RU.UTF-8"))?;
    let root = std::env::temp_dir().join("billing-testkit-locales");
    let dir = root.join(name);
    if dir.join("LC_MESSAGES").exists() {
        return Ok(root);
    }
    fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    // Built beside its final place and renamed, so a run killed halfway leaves nothing that looks complete.
    let partial = root.join(format!("{name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    let output = Command::new("localedef")
        .args(["-i", language, "-f", charset])
        .arg(&partial)
        .output()
        .map_err(|e| format!("cannot run localedef: {e}. {HINT}"))?;
    // localedef exits 1 for warnings about the locale sources; what matters is that the locale was written.
    if !partial.join("LC_MESSAGES").exists() {
        return Err(format!(
            "localedef could not compile {name}: {}. {HINT}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    // Another test binary may have finished the same locale meanwhile; either copy will do.
    if fs::rename(&partial, &dir).is_err() {
        let _ = fs::remove_dir_all(&partial);
    }
    Ok(root)
}
