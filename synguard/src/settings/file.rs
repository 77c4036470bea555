//! The TOML config file (`--config`): its keys, each value with its position, and errors that
//! name the file, the line and the key.

use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use synguard_common::{PerSourceAction, SyncookieMode, XdpMode};
use toml::Spanned;

use crate::private;
use crate::settings::error::{ConfigError, error};
use crate::settings::ports::parse_port_range;
use crate::settings::values::{LogFormat, OnExit};

/// The keys of the config file; every value keeps its position for error messages.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileValues {
    pub(super) iface: Option<Spanned<Vec<String>>>,
    pub(super) ports: Option<Spanned<Vec<PortItem>>>,
    pub(super) xdp_mode: Option<Spanned<XdpMode>>,
    pub(super) mss4: Option<Spanned<i64>>,
    pub(super) mss6: Option<Spanned<i64>>,
    pub(super) wscale: Option<Spanned<i64>>,
    pub(super) ttl: Option<Spanned<i64>>,
    pub(super) stats_interval: Option<Spanned<i64>>,
    pub(super) syncookies: Option<Spanned<SyncookieMode>>,
    pub(super) max_syn_backlog: Option<Spanned<i64>>,
    pub(super) cooldown: Option<Spanned<i64>>,
    pub(super) attack_syn_rate: Option<Spanned<i64>>,
    pub(super) tune_kernel: Option<Spanned<bool>>,
    pub(super) synack_retries: Option<Spanned<i64>>,
    pub(super) abort_on_overflow: Option<Spanned<bool>>,
    pub(super) per_source_half_open: Option<Spanned<i64>>,
    pub(super) per_source_invalid_ack: Option<Spanned<i64>>,
    pub(super) block_seconds: Option<Spanned<i64>>,
    pub(super) per_source_action: Option<Spanned<PerSourceAction>>,
    pub(super) source_prefix4: Option<Spanned<i64>>,
    pub(super) source_prefix6: Option<Spanned<i64>>,
    pub(super) allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) deny: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) allow_file: Option<Spanned<PathBuf>>,
    pub(super) deny_file: Option<Spanned<PathBuf>>,
    pub(super) on_exit: Option<Spanned<OnExit>>,
    pub(super) metrics_addr: Option<Spanned<String>>,
    pub(super) log_format: Option<Spanned<LogFormat>>,
}

/// One `ports` item: a number or a `"LO-HI"` string.
#[derive(Debug)]
pub(super) struct PortItem(pub(super) RangeInclusive<u16>);

impl<'de> Deserialize<'de> for PortItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        parse_port_range(&text)
            .map(PortItem)
            .map_err(serde::de::Error::custom)
    }
}

/// A parsed config file with its text, for line numbers.
#[derive(Debug, Default)]
pub(super) struct FileConfig {
    pub(super) path: String,
    text: String,
    pub(super) values: FileValues,
}

impl FileConfig {
    pub(super) fn read(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = private::read_trusted(path).map_err(|e| error(format!("config file {e}")))?;
        let mut config = Self {
            path: shown,
            text,
            values: FileValues::default(),
        };
        config.values = toml::from_str(&config.text).map_err(|e| {
            let message = e.message().trim_end().replace('\n', " ");
            match e.span() {
                Some(span) => config.at(span.clone(), &config.key_at(span), &message),
                None => error(format!("{}: {message}", config.path)),
            }
        })?;
        Ok(config)
    }

    pub(super) fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// The key of the `key = value` line holding `span`.
    fn key_at(&self, span: Range<usize>) -> String {
        let start = self.text[..span.start.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or_default();
        line.split_once('=')
            .map_or(line, |(key, _)| key)
            .trim()
            .to_owned()
    }

    /// `FILE:LINE: key `KEY`: MESSAGE`.
    pub(super) fn at(&self, span: Range<usize>, key: &str, message: &str) -> ConfigError {
        error(format!(
            "{}:{}: key `{key}`: {message}",
            self.path,
            self.line(span.start)
        ))
    }

    /// The flag's value, else the file's (checked against `range` and the flag's type), else
    /// `None`.
    pub(super) fn number<T: TryFrom<i64>>(
        &self,
        flag: Option<T>,
        value: &Option<Spanned<i64>>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Option<T>, ConfigError> {
        let value = match (flag, value) {
            (Some(v), _) => return Ok(Some(v)),
            (None, None) => return Ok(None),
            (None, Some(value)) => value,
        };
        let v = *value.get_ref();
        match T::try_from(v) {
            Ok(number) if range.contains(&v) => Ok(Some(number)),
            _ => Err(self.at(
                value.span(),
                key,
                &format!("{v} is out of range ({}-{})", range.start(), range.end()),
            )),
        }
    }

    /// A relative path in the file is relative to the file's directory.
    pub(super) fn resolve_path(&self, path: &Path) -> PathBuf {
        match Path::new(&self.path).parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        }
    }
}
