//! The log settings, changeable while the server runs (Triton's logging
//! extension): which events are logged (info, warnings, errors, and the
//! verbosity that turns debug events on) and the line format. The process
//! has one log subscriber; the executable installs the function that
//! applies a level to it ([`install`]); without one (a server embedded in
//! a test) the settings are kept and reported, and change nothing.

use std::sync::{Mutex, OnceLock};

/// The log settings, as Triton's logging extension names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Log info events.
    pub info: bool,
    /// Log warnings.
    pub warning: bool,
    /// Log errors.
    pub error: bool,
    /// Above 0: log debug events too.
    pub verbose: u32,
    /// `default` or `ISO8601` (both print RFC 3339 times here).
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            info: true,
            warning: true,
            error: true,
            verbose: 0,
            format: "default".into(),
        }
    }
}

impl LogSettings {
    /// The `tracing` filter these settings ask for.
    pub fn filter(&self) -> &'static str {
        crate::cli::triton_log_filter(self.verbose, self.info, self.warning, self.error)
    }
}

/// Applies a filter to the process's log subscriber.
pub type Apply = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

struct Control {
    settings: Mutex<LogSettings>,
    apply: Mutex<Option<Apply>>,
}

fn control() -> &'static Control {
    static CONTROL: OnceLock<Control> = OnceLock::new();
    CONTROL.get_or_init(|| Control {
        settings: Mutex::new(LogSettings::default()),
        apply: Mutex::new(None),
    })
}

/// Makes `apply` change the process's log filter, starting from `initial`
/// (what the command line and environment asked for).
pub fn install(initial: LogSettings, apply: Apply) {
    let c = control();
    *c.settings.lock().unwrap_or_else(|e| e.into_inner()) = initial;
    *c.apply.lock().unwrap_or_else(|e| e.into_inner()) = Some(apply);
}

/// The settings now.
pub fn settings() -> LogSettings {
    control()
        .settings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Changes the settings with `change` and applies them; returns them.
pub fn update(change: impl FnOnce(&mut LogSettings)) -> Result<LogSettings, String> {
    let c = control();
    let mut settings = c.settings.lock().unwrap_or_else(|e| e.into_inner());
    let mut next = settings.clone();
    change(&mut next);
    if let Some(apply) = c.apply.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        apply(next.filter())?;
    }
    tracing::info!(filter = next.filter(), "log settings changed");
    *settings = next.clone();
    Ok(next)
}
