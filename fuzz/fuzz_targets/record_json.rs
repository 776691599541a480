//! The same parser in JSON Lines mode (a .jsonl file, or a Kafka message):
//! the spec dataflows/lending_club.toml, the default --max-record-bytes, one
//! parser reused for every record. Any bytes as one record: never a panic; a
//! refusal is an ingest dead letter keeping the raw bytes; an accepted record
//! is well typed and its own JSON form reads back to the same values.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use loanflow::dataflow::ingest::Parser;
use loanflow::core::record::Stage;
use loanflow::spec::Spec;

mod common;

struct State {
    spec: Spec,
    json: Parser,
    again: Parser,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new({
        let spec = common::spec();
        State { json: common::json_parser(&spec), again: common::json_parser(&spec), spec }
    });
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|state| {
        let State { spec, json, again } = &mut *state.borrow_mut();
        match json.parse(common::raw(data)) {
            Ok(record) => {
                common::check_record(spec, &record, data);
                common::check_json_round_trip(spec, again, &record);
            }
            Err(dl) => common::check_dead_letter(&dl, data, Stage::Ingest),
        }
    })
});
