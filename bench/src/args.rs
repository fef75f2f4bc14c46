//! A minimal `--key value` / `--flag` parser for the bench binaries (no
//! dependency; the binaries have few options).

use anyhow::{Context, Result, bail};

/// Parsed command line: one positional scenario and `--key [value]` pairs.
#[derive(Debug, Default)]
pub struct Args {
    /// The first positional argument.
    pub scenario: Option<String>,
    pairs: Vec<(String, Option<String>)>,
}

impl Args {
    /// Parses `args` (without the program name).
    ///
    /// # Errors
    ///
    /// On a second positional argument.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args> {
        let mut out = Args::default();
        let mut it = args.into_iter().peekable();
        while let Some(a) = it.next() {
            if let Some(key) = a.strip_prefix("--") {
                let value = match it.peek() {
                    Some(v) if !v.starts_with("--") => it.next(),
                    _ => None,
                };
                out.pairs.push((key.to_owned(), value));
            } else if out.scenario.is_none() {
                out.scenario = Some(a);
            } else {
                bail!("unexpected argument {a:?}");
            }
        }
        Ok(out)
    }

    /// True if `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// The value of `--name`, parsed, or `default`.
    ///
    /// # Errors
    ///
    /// If the value does not parse.
    pub fn value<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.pairs.iter().find(|(k, _)| k == name) {
            Some((_, Some(v))) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("--{name} {v}")),
            Some((_, None)) => bail!("--{name} needs a value"),
            None => Ok(default),
        }
    }
}
