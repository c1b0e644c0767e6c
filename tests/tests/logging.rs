//! takgate's own log as a file or a log collector receives it: the real binary, its stderr a
//! file rather than a terminal.

use takgate_tests::process::TakgateProcess;
use takgate_tests::proxy::web_config;

/// Colour codes are for a person at a terminal; in a file they are bytes of noise around
/// every level and field name.
#[tokio::test(flavor = "multi_thread")]
async fn a_text_log_written_to_a_file_has_no_colour_codes() {
    // The default log format is text. Startup does not contact the upstream.
    let gate = TakgateProcess::start(&web_config("http://127.0.0.1:9", "")).await;
    let log = gate.log();
    // Written before the bound addresses that `start` waited for.
    assert!(
        log.contains("listening"),
        "no startup lines in the log:\n{log}"
    );
    assert!(!log.contains("\x1b["), "colour codes in the log:\n{log:?}");
}
