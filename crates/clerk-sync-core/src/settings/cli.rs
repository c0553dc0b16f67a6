//! The `--config` and `--check-config` flags every binary takes, and what they do.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Requirement, Settings, Sources};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// TOML file layered over the built-in defaults (also CLERK_SYNC_CONFIG).
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print it with secrets redacted, and exit.
    #[arg(long, global = true)]
    pub check_config: bool,
}

impl ConfigArgs {
    /// Loads and validates the configuration; logging is the caller's to start (with
    /// [`crate::telemetry::init`]). `Err` carries the exit code: success after `--check-config`,
    /// 2 (with every problem on stderr) when invalid.
    pub fn load(&self, requirements: &[Requirement]) -> Result<Settings, ExitCode> {
        let sources = Sources::from_process(self.config.clone());
        match Settings::load(&sources, requirements) {
            Ok(settings) if self.check_config => {
                print!("{}", settings.render_redacted());
                eprintln!("configuration is valid");
                Err(ExitCode::SUCCESS)
            }
            Ok(settings) => Ok(settings),
            Err(e) => {
                eprint!("{e}");
                Err(ExitCode::from(2))
            }
        }
    }
}
