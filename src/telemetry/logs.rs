//! The tracing subscriber: logs to stderr, JSON lines or text.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the tracing subscriber: logs to stderr (stdout carries command output), JSON lines or
/// text, filtered by `RUST_LOG` (default `info`). Emails and tokens are never logged above debug
/// by the rooms; tokens never at all.
pub fn init_tracing(format: LogFormat) {
    init_tracing_with(format, "info")
}

/// [`init_tracing`] with another default filter when `RUST_LOG` is unset.
pub fn init_tracing_with(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
