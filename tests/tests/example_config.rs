//! The example config shipped in deploy/ is valid and reproduces OTS's nginx routes.

use takgate::config::{Config, Profile, StreamMode};

#[test]
fn the_shipped_example_parses_and_covers_every_ots_server_block() {
    let text = include_str!("../../deploy/takgate.toml");
    let config = Config::parse(text).expect("deploy/takgate.toml is valid");
    let profiles: Vec<_> = config
        .http
        .iter()
        .map(|l| (l.listen.port(), l.profile))
        .collect();
    assert_eq!(
        profiles,
        [
            (80, Profile::Redirect),
            (8080, Profile::Web),
            (443, Profile::Web),
            (8443, Profile::Marti),
            (8446, Profile::Enroll),
        ]
    );
    let streams: Vec<_> = config
        .stream
        .iter()
        .map(|l| (l.listen.port(), l.upstream.as_str(), l.mode))
        .collect();
    assert_eq!(
        streams,
        [
            (8089, "127.0.0.1:8089", StreamMode::Reoriginate),
            (8088, "127.0.0.1:8088", StreamMode::Plain),
            (8883, "127.0.0.1:1883", StreamMode::Raw),
            (8322, "127.0.0.1:8554", StreamMode::Raw),
            (1936, "127.0.0.1:1935", StreamMode::Raw),
        ]
    );
    // The UI folder is the one warning a machine without OTS's UI may raise.
    let warnings: Vec<_> = config
        .warnings()
        .into_iter()
        .filter(|w| !w.contains("ui_root") && !w.contains("does not exist yet"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}
