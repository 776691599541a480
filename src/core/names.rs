//! The default names a run gives its group and topics, which `loanflow
//! verify` (and anyone reading a run's outputs) must find again: one rule,
//! here.

/// The consumer group of a live pipeline of `dataflow` (`--group`'s default).
pub fn group(dataflow: &str) -> String {
    format!("loanflow.{dataflow}")
}

/// The name of one stage of `dataflow` run as its own service
/// (`--stages clean` → `lending_club.clean`): what its group is named after.
pub fn stage(dataflow: &str, stage: &str) -> String {
    format!("{dataflow}.{stage}")
}

/// The group of a bounded or positioned replay started at `millis` (ms
/// since the epoch): its own, so a live pipeline's committed offsets never move.
pub fn replay_group(dataflow: &str, millis: u128) -> String {
    format!("loanflow.{dataflow}.replay-{millis}")
}

/// Where dead letters of `output_topic` go (`--dead-letter-topic`'s default).
pub fn dead_letter_topic(output_topic: &str) -> String {
    format!("{output_topic}.dead-letters")
}

/// Where an exactly-once run writes its progress records (`--progress-topic`'s default).
pub fn progress_topic(output_topic: &str) -> String {
    format!("{output_topic}.progress")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_follow_the_documented_defaults() {
        assert_eq!(super::group("lending_club"), "loanflow.lending_club");
        assert_eq!(super::replay_group("d", 7), "loanflow.d.replay-7");
        assert_eq!(
            super::group(&super::stage("d", "clean")),
            "loanflow.d.clean"
        );
        assert_eq!(super::dead_letter_topic("s"), "s.dead-letters");
        assert_eq!(super::progress_topic("s"), "s.progress");
    }
}
