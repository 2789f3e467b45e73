//! Configuration problems: every one carries the key path it is about, so an operator can
//! fix a whole file in one pass instead of one error per restart.

use std::fmt;

/// One problem (or warning) found in the configuration, located by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigProblem {
    /// Where: a key path such as `presence.idle_timeout` or `listeners[0].port`, or a file
    /// name for problems that concern a whole file.
    pub path: String,
    /// What is wrong, as a sentence fragment (`must be greater than ...`).
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str("(top level): ")?;
        } else {
            write!(f, "{}: ", self.path)?;
        }
        // Parser messages can span several lines (source snippets); keep them indented
        // under their bullet so the list stays readable.
        let mut lines = self.message.lines();
        if let Some(first) = lines.next() {
            f.write_str(first)?;
        }
        for line in lines {
            write!(f, "\n      {line}")?;
        }
        Ok(())
    }
}

/// The configuration cannot be used: every problem found, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// Wraps a list of problems (sorted by key path so the report is stable).
    pub fn new(mut problems: Vec<ConfigProblem>) -> Self {
        problems.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| a.message.cmp(&b.message)));
        problems.dedup();
        Self { problems }
    }

    /// A single problem.
    pub fn single(path: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::new(vec![ConfigProblem::new(path, message)])
    }

    /// The problems, sorted by key path.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.len() {
            1 => f.write_str("the configuration has 1 problem:")?,
            n => write!(f, "the configuration has {n} problems:")?,
        }
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}
