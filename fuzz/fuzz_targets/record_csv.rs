//! The CSV record parser as `loanflow run` uses it: the spec
//! dataflows/lending_club.toml, the header of data/lending_club.csv, the
//! default --max-record-bytes, one parser reused for every record (as each
//! worker does). Any bytes as one record: never a panic; a refusal is an
//! ingest dead letter keeping the raw bytes; an accepted record is well typed
//! and reads back identically from its JSON form.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use loanflow::dataflow::ingest::Parser;
use loanflow::core::record::Stage;
use loanflow::spec::Spec;

mod common;

struct State {
    spec: Spec,
    csv: Parser,
    json: Parser,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new({
        let spec = common::spec();
        State { csv: common::csv_parser(&spec), json: common::json_parser(&spec), spec }
    });
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|state| {
        let State { spec, csv, json } = &mut *state.borrow_mut();
        match csv.parse(common::raw(data)) {
            Ok(record) => {
                common::check_record(spec, &record, data);
                common::check_json_round_trip(spec, json, &record);
            }
            Err(dl) => common::check_dead_letter(&dl, data, Stage::Ingest),
        }
    })
});
