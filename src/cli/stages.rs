//! `--stages` and `--cleaned-topic`: which topic a run reads and writes for
//! the stages it runs, checked once, before anything starts.
//!
//! | `--stages` | reads                          | writes                                     |
//! |------------|--------------------------------|--------------------------------------------|
//! | `all`      | `--input-topic` or `--input`   | `--output-topic` or `--output` (+ `--cleaned-topic`) |
//! | `clean`    | `--input-topic` or `--input`   | `--cleaned-topic` or `--output`            |
//! | `predict`  | `--cleaned-topic` or `--input` | `--output-topic` or `--output`             |

use super::RunArgs;
use crate::dataflow::graph::Stages;

/// Flags that do not fit the stages a run was given; each says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StagesError {
    /// A predict stage given `--input-topic`.
    #[error("--stages predict reads feature rows from --cleaned-topic (or --input FILE), not --input-topic")]
    PredictInputTopic,
    /// A clean stage given `--output-topic`.
    #[error("--stages clean writes feature rows to --cleaned-topic (or --output FILE), not --output-topic")]
    CleanOutputTopic,
    /// A whole run publishing its feature rows with nowhere to put its scores.
    #[error("--cleaned-topic beside all stages publishes the feature rows next to --output-topic: give --output-topic too (or run --stages clean)")]
    CleanedWithoutOutputTopic,
    /// `--exactly-once` without a topic on both sides.
    #[error("--exactly-once needs a topic in and a topic out ({0})")]
    ExactlyOnceNeedsTopics(&'static str),
    /// `--until`/`--until-caught-up` without a topic to bound.
    #[error("--until applies to a topic input (a file ends by itself; `loanflow replay` bounds a file by event time)")]
    UntilNeedsTopic,
}

impl RunArgs {
    /// The topic records come from: `--input-topic`, or a predict stage's `--cleaned-topic`.
    pub fn source_topic(&self) -> Option<&str> {
        match self.stages {
            Stages::Predict => self.cleaned_topic.as_deref(),
            _ => self.input_topic.as_deref(),
        }
    }

    /// The topic outputs go to: `--output-topic`, or a clean stage's `--cleaned-topic`.
    pub fn sink_topic(&self) -> Option<&str> {
        match self.stages {
            Stages::Clean => self.cleaned_topic.as_deref(),
            _ => self.output_topic.as_deref(),
        }
    }

    /// The cleaned topic a whole-dataflow run publishes beside its output topic.
    pub fn published_cleaned_topic(&self) -> Option<&str> {
        match self.stages {
            Stages::All => self.cleaned_topic.as_deref(),
            _ => None,
        }
    }

    /// Checks that the topic flags fit `--stages`.
    pub fn check_stages(&self) -> Result<(), StagesError> {
        match self.stages {
            Stages::Predict if self.input_topic.is_some() => {
                return Err(StagesError::PredictInputTopic)
            }
            Stages::Clean if self.output_topic.is_some() => {
                return Err(StagesError::CleanOutputTopic)
            }
            Stages::All if self.cleaned_topic.is_some() && self.output_topic.is_none() => {
                return Err(StagesError::CleanedWithoutOutputTopic)
            }
            _ => {}
        }
        if self.exactly_once {
            let need = match self.stages {
                Stages::All => "--input-topic and --output-topic",
                Stages::Clean => "--input-topic and --cleaned-topic",
                Stages::Predict => "--cleaned-topic and --output-topic",
            };
            if self.source_topic().is_none() || self.sink_topic().is_none() {
                return Err(StagesError::ExactlyOnceNeedsTopics(need));
            }
        }
        if (self.until.is_some() || self.until_caught_up) && self.source_topic().is_none() {
            return Err(StagesError::UntilNeedsTopic);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::StagesError;
    use crate::cli::{Cli, Command, RunArgs};

    fn run(args: &str) -> RunArgs {
        let argv = ["loanflow", "run", "--brokers", "b:9092"]
            .into_iter()
            .chain(args.split_whitespace());
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(r) => r.resolved(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_stage_reads_and_writes_its_own_topics() {
        let all = run("--input-topic a --output-topic c --cleaned-topic b");
        assert_eq!(
            (all.source_topic(), all.sink_topic()),
            (Some("a"), Some("c"))
        );
        assert_eq!(all.published_cleaned_topic(), Some("b"));
        let clean = run("--stages clean --input-topic a --cleaned-topic b");
        assert_eq!(
            (clean.source_topic(), clean.sink_topic()),
            (Some("a"), Some("b"))
        );
        assert_eq!(clean.published_cleaned_topic(), None);
        let predict = run("--stages predict --cleaned-topic b --output-topic c");
        assert_eq!(
            (predict.source_topic(), predict.sink_topic()),
            (Some("b"), Some("c"))
        );
        for ok in [&all, &clean, &predict] {
            assert_eq!(ok.check_stages(), Ok(()));
        }
    }

    #[test]
    fn topics_that_do_not_fit_the_stages_are_refused() {
        for (args, error) in [
            (
                "--stages predict --input-topic a --cleaned-topic b",
                StagesError::PredictInputTopic,
            ),
            (
                "--stages clean --input-topic a --output-topic c",
                StagesError::CleanOutputTopic,
            ),
            (
                "--input-topic a --cleaned-topic b",
                StagesError::CleanedWithoutOutputTopic,
            ),
            (
                "--stages clean --input-topic a --exactly-once",
                StagesError::ExactlyOnceNeedsTopics("--input-topic and --cleaned-topic"),
            ),
            (
                "--stages predict --until-caught-up",
                StagesError::UntilNeedsTopic,
            ),
        ] {
            assert_eq!(run(args).check_stages(), Err(error), "{args}");
        }
    }
}
