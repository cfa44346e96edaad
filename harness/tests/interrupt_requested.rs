//! [`interrupt::request`] from a program of one's own: a run asked to stop answers
//! [`RunError::Interrupted`] with the signal, even one that got to its end before it
//! looked. A binary of its own: the request is for the whole process and stays.

use turnstile_harness::interrupt;
use turnstile_harness::{RunConfig, RunError, Workload, registry, run};

#[test]
fn a_run_asked_to_stop_answers_interrupted() {
    let config = RunConfig::new("mutex", Workload::Counter)
        .threads(2)
        .ops(50);
    run(&config, &registry()).expect("a run nobody stopped passes");
    interrupt::request(15);
    interrupt::request(2);
    assert_eq!(
        interrupt::requested(),
        Some(15),
        "the first request is kept"
    );
    match run(&config, &registry()) {
        Err(RunError::Interrupted(15)) => {}
        other => panic!("{other:?}"),
    }
    let error = RunError::Interrupted(15);
    assert_eq!(error.exit_code(), 143);
    assert!(error.to_string().starts_with("interrupted: "), "{error}");
}
